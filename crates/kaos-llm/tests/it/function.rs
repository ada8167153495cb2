//! FunctionClient.
