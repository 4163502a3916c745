//! The prices the API charges: the catalogue's (`products`), never the client's.
//!
//! Each SKU's price is read from the store and kept for a few seconds ([`PRICE_TTL`]) in process, so a busy
//! API reads the catalogue once per product and interval rather than once per order; a price change (or a
//! product added by `orderflow catalog import`) is charged at most that long after it was made.

use std::time::Duration;

use orderflow_domain::{MinorUnits, NewOrder, OrderRequest, PricingError, ValidationErrors};
use orderflow_store::Store;

use crate::ApiError;

/// How long a product's price (or its absence) is kept before the catalogue is read again.
pub const PRICE_TTL: Duration = Duration::from_secs(2);

/// Most SKUs whose price is kept at once.
const CAPACITY: u64 = 100_000;

/// Prices order requests from the catalogue; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Catalogue {
    store: Store,
    /// SKU -> unit price in minor units, `None` for a product the catalogue does not hold.
    prices: moka::sync::Cache<String, Option<i64>>,
}

impl Catalogue {
    /// A catalogue read from `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            prices: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(PRICE_TTL)
                .build(),
        }
    }

    /// `request` with every line at the catalogue's price: `422` naming each line whose product the
    /// catalogue does not hold, `409` naming each line that quoted another price.
    pub async fn price(&self, request: OrderRequest) -> Result<NewOrder, ApiError> {
        // Each price is taken once, here: an entry that expires after this point does not matter.
        let mut known: Vec<(String, Option<i64>)> = Vec::with_capacity(request.items().len());
        let mut missing: Vec<&str> = Vec::new();
        for line in request.items() {
            let sku = line.sku.as_str();
            match self.prices.get(sku) {
                Some(price) => known.push((sku.to_owned(), price)),
                None => missing.push(sku),
            }
        }
        if !missing.is_empty() {
            let found = self.store.product_prices(&missing).await?;
            for sku in missing {
                let price = found.iter().find(|(s, _)| s == sku).map(|(_, p)| *p);
                self.prices.insert(sku.to_owned(), price);
                known.push((sku.to_owned(), price));
            }
        }
        request
            .price(|sku| {
                known
                    .iter()
                    .find(|(s, _)| s == sku.as_str())
                    .and_then(|(_, price)| *price)
                    .and_then(|price| MinorUnits::unit_price(price).ok())
            })
            .map_err(|error| match error {
                PricingError::Unpriceable(errors) => ApiError::Validation(errors),
                PricingError::QuoteDiffers(lines) => {
                    let mut errors = ValidationErrors::default();
                    for line in lines {
                        errors.push(
                            line.field,
                            format!(
                                "quoted {} for '{}', but its price is {}: send the catalogue's price or none",
                                line.quoted, line.sku, line.price
                            ),
                        );
                    }
                    ApiError::PriceChanged(errors)
                }
            })
    }
}
