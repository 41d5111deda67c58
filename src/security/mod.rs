//! What both listeners (MQTT and Kafka) use to let only the right clients in: the
//! `users_file` (`users`), SCRAM's server side (`scram`), and TLS from PEM files (`tls`).

pub mod scram;
pub mod tls;
pub mod users;
