//! Model-provider clients: OpenAI-compatible and Anthropic upstreams, routing and fallback,
//! retries, circuit breaking, streaming and metering.
//!
//! Holds no tenant policy: the server decides who may call which model and what the profile
//! is; this crate applies the profile to the wire formats ([`dialect`]), talks to the
//! upstreams ([`client`]), and reads back usage.

pub mod breaker;
pub mod client;
pub mod dialect;
pub mod sse;
pub mod upstream;
