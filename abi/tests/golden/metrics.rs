// Golden tests for msg::metrics (to be written).
