//! Order domain types for Orderflow.
//!
//! Everything that enters the system is parsed into these types first ("parse, don't validate"): once a
//! [`NewOrder`] exists it is known to be well formed, so the store, the bus and the roles never re-check it.

mod ids;
mod money;
mod order;
mod validation;

pub use ids::{CustomerId, EventId, OrderId, Sku};
pub use money::{Currency, MinorUnits, Quantity};
pub use order::{
    NewOrder, NewOrderItem, Order, OrderItem, OrderRequest, OrderStatus, PricingError, QuoteMismatch,
    RequestedItem, TransitionError, UnknownStatus,
};
pub use validation::{FieldError, ValidationErrors};
