//! The MQTT side: two ingress faces that hand each PUBLISH on as a [`Delivery`] and ack it
//! once the pipeline has stored it.
//!
//! - `client`: the client of an existing broker (rumqttc), one session kept up across failures.
//! - `server`: the listener face: devices connect to Tributary itself.
//! - `acks`: the in-order ack tracker (pure), used by the client face.
//!
//! [`Delivery`]: crate::message::Delivery

pub mod acks;
pub mod client;
pub mod server;

pub use client::{session, Acker, Ingress};
