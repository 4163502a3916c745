-- Orders still waiting for a payment outcome or for stock, by when they last moved: the stranded-order
-- sweeper finds those that stopped moving without scanning finished orders.
CREATE INDEX orders_in_flight ON orders (updated_at) WHERE status IN ('CREATED', 'PAID');
