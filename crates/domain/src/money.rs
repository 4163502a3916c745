//! Money and quantities: ISO 4217 currencies and integer minor units (never floating point).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An active ISO 4217 currency such as `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an upper-case three-letter ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, String> {
        iso_currency::Currency::from_code(code)
            .map(Self)
            .ok_or_else(|| format!("unknown currency '{code}' (expected an ISO 4217 code such as EUR)"))
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money in the currency's minor unit (cents for EUR); always at least zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    /// Largest unit price accepted for one item (10^12 minor units).
    pub const MAX_UNIT_PRICE: i64 = 1_000_000_000_000;

    /// Zero.
    pub const ZERO: Self = Self(0);

    /// Parses a unit price: strictly positive and at most [`Self::MAX_UNIT_PRICE`].
    pub fn unit_price(value: i64) -> Result<Self, String> {
        if value <= 0 {
            Err("must be greater than 0 (minor units, e.g. cents)".into())
        } else if value > Self::MAX_UNIT_PRICE {
            Err(format!("must be at most {}", Self::MAX_UNIT_PRICE))
        } else {
            Ok(Self(value))
        }
    }

    /// The amount as an integer number of minor units.
    pub fn get(&self) -> i64 {
        self.0
    }

    /// `self * quantity`, or `None` on overflow.
    pub fn checked_mul(self, quantity: Quantity) -> Option<Self> {
        self.0.checked_mul(i64::from(quantity.get())).map(Self)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }
}

impl TryFrom<i64> for MinorUnits {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        if v < 0 {
            Err("must not be negative".into())
        } else {
            Ok(Self(v))
        }
    }
}

impl From<MinorUnits> for i64 {
    fn from(m: MinorUnits) -> Self {
        m.0
    }
}

/// How many units of one SKU an order line asks for: 1..=[`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// Largest quantity accepted on one line.
    pub const MAX: u32 = 10_000;

    /// Parses a quantity.
    pub fn parse(value: i64) -> Result<Self, String> {
        if value < 1 {
            Err("must be at least 1".into())
        } else if value > i64::from(Self::MAX) {
            Err(format!("must be at most {}", Self::MAX))
        } else {
            u32::try_from(value)
                .map(Self)
                .map_err(|_| format!("must be at most {}", Self::MAX))
        }
    }

    /// The quantity as a number.
    pub fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::parse(i64::from(v))
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_iso_codes() {
        assert_eq!(Currency::parse("EUR").map(|c| c.code()), Ok("EUR"));
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    #[test]
    fn prices_and_quantities_are_bounded() {
        assert!(MinorUnits::unit_price(0).is_err());
        assert!(MinorUnits::unit_price(-5).is_err());
        assert!(MinorUnits::unit_price(MinorUnits::MAX_UNIT_PRICE + 1).is_err());
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert_eq!(Quantity::parse(3).map(|q| q.get()), Ok(3));
    }
}
