//! Talking to a SignalR service (Azure or embedded): connection strings and endpoint URLs,
//! access tokens, the data-plane REST client and the hub protocol.

pub mod protocol;
pub mod token;
