// Golden tests for msg::host (to be written).
