//! The agent hub: the agents connected right now, each with the sender of its
//! channel, so the API can push work to a host the moment it exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use netwatch_api::agent::ControllerMessage;
use tokio::sync::mpsc;

/// The connected agents, by VM key (the lower-case VM resource id).
#[derive(Debug, Clone, Default)]
pub struct Hub {
    agents: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ControllerMessage>>>>,
}
