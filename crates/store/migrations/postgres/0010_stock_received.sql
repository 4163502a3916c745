-- Units ever put into stock, so `orderflow reconcile` can check the stock ledger: stock plus the units of
-- ALLOCATED reservations must equal it. NULL for rows written outside Orderflow (not checked).
ALTER TABLE products ADD COLUMN received BIGINT;
UPDATE products SET received = stock + COALESCE((
    SELECT SUM(l.quantity) FROM inventory_reservation_lines l
    JOIN inventory_reservations r ON r.order_id = l.order_id
    WHERE r.status = 'ALLOCATED' AND l.sku = products.sku), 0);
