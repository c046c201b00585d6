// Golden tests for msg::llm (to be written).
