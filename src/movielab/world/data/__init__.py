"""MovieLens data: loading, the catalog, and synthetic scale-up."""
