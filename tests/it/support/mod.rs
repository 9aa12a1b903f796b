//! Test support: `TestServer` (Herald in-process on 127.0.0.1:0 over a temp sled dir) and
//! `Receiver` (a real axum rest-hook endpoint whose answer the test can switch mid-run),
//! `WsClient` (a websocket client bound with a real `$get-ws-binding-token` token).

#![allow(dead_code)]

pub mod backport;
pub mod binary;
pub mod receiver;
pub mod server;
pub mod status;
pub mod ws;

pub use receiver::{Received, Receiver};
pub use server::{TestCert, TestServer};
pub use ws::WsClient;
