// Golden tests for msg::record (to be written).
