//! Model-provider clients: OpenAI-compatible and Anthropic upstreams, routing and fallback,
//! retries, circuit breaking, streaming and metering.
//!
//! Holds no tenant policy: it is handed an already-redacted request and a route. Its contents
//! arrive with the model-gateway capability.
