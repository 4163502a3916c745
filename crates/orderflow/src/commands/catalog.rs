//! `orderflow catalog import`: loads products, their prices and their stock from a CSV file.

use std::path::Path;

use anyhow::{Context, bail};
use orderflow_domain::{MinorUnits, Sku};
use orderflow_roles::Settings;
use orderflow_store::Product;

/// One row of the file, as written.
#[derive(Debug, serde::Deserialize)]
struct Row {
    sku: String,
    name: String,
    price_minor: i64,
    stock: i64,
}

/// Reads every product of `file` (`-`: standard input), checking each row like the API checks an order's
/// lines; fails naming the first bad row.
fn read(file: &Path) -> anyhow::Result<Vec<Product>> {
    let reader: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
    let headers = csv
        .headers()
        .with_context(|| format!("reading {}", file.display()))?
        .clone();
    for wanted in ["sku", "name", "price_minor", "stock"] {
        if !headers.iter().any(|h| h == wanted) {
            bail!(
                "{}: the header must name the columns sku,name,price_minor,stock (missing {wanted})",
                file.display()
            );
        }
    }
    let mut products = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, row) in csv.deserialize::<Row>().enumerate() {
        // Line 1 is the header.
        let line = i + 2;
        let row = row.with_context(|| format!("{} line {line}", file.display()))?;
        let bad = |what: String| anyhow::anyhow!("{} line {line}: {what}", file.display());
        let sku = Sku::parse(&row.sku).map_err(|e| bad(format!("sku: {e}")))?;
        if row.name.trim().is_empty() {
            return Err(bad("name: must not be empty".into()));
        }
        let price = MinorUnits::unit_price(row.price_minor).map_err(|e| bad(format!("price_minor: {e}")))?;
        let stock = i32::try_from(row.stock)
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| bad(format!("stock: must be a whole number from 0 to {}", i32::MAX)))?;
        if !seen.insert(sku.to_string()) {
            return Err(bad(format!("sku: '{sku}' is listed twice")));
        }
        products.push(Product {
            sku: sku.to_string(),
            name: row.name,
            price_minor: price.get(),
            stock,
        });
    }
    if products.is_empty() {
        bail!(
            "{}: no products (expected a header line and one line per product)",
            file.display()
        );
    }
    Ok(products)
}

/// Creates or updates the products of `file` in one transaction.
pub async fn import(settings: &Settings, file: &Path) -> anyhow::Result<()> {
    let products = read(file)?;
    let store = super::database::connect(settings).await?;
    if settings.database.migrate_on_start {
        store.migrate().await?;
    }
    store.put_products(&products).await?;
    println!(
        "imported {} products into the catalogue ({})",
        products.len(),
        store.backend().name()
    );
    Ok(())
}
