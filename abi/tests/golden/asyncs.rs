// Golden tests for msg::asyncs (to be written).
