"""Results as data: records, the results store, published numbers, the papers' tables and the figures."""
