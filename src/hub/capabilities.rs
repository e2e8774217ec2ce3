//! Core layer (sans-IO), part of the hub: what the session's glasses can do. The model the
//! glasses name (`glasses_connection_state.modelName`, `core_status_update`'s
//! `connected_glasses.model_name`) is looked up in [`crate::protocol::capabilities`]; the
//! result is kept in the session (`Session::capabilities`), carried in every
//! `tpa_connection_ack`, and sent to the session's connected apps as `capabilities_update`
//! whenever it changes.
//!
//! Rules (README, "Capabilities"): the latest report wins; a report that changes nothing sends
//! nothing (phones repeat `core_status_update` often); an empty name, or a
//! `glasses_connection_state` that is not connected, changes nothing; a model without a
//! profile gets the `capabilities` object its glasses sent with it (kept when a later report
//! names the same model bare), else the conservative profile, and is counted
//! (`refusals{code="UNKNOWN_GLASSES_MODEL"}`) once per change to it. A name over 100 bytes is
//! refused (`INVALID_GLASSES_MODEL`) and changes nothing.

use super::{Hub, SessKey};
use crate::net::Outbox;
use crate::protocol::capabilities;
use crate::protocol::inbound::{self, ConnectionState};
use crate::protocol::outbound::CapabilitiesUpdate;
use crate::time::Now;
use serde_json::Value;

/// Longer model names are refused (counted as `INVALID_GLASSES_MODEL`): no glasses is called
/// that, and the name is copied to every app of the session.
const MAX_MODEL_NAME: usize = 100;

impl Hub {
    /// `glasses_connection_state`: the model it names, while connected.
    pub(super) fn connection_state(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        text: &str,
        now: Now,
    ) {
        let Some(state) = inbound::decode::<ConnectionState<'_>>(text) else {
            return;
        };
        if state
            .status
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("CONNECTED"))
        {
            return;
        }
        if let Some(model) = state.model_name.as_deref() {
            self.glasses_model(net, sk, model, state.capabilities.as_ref(), now);
        }
    }

    /// The glasses named `model` (with what they `reported` of themselves, if anything).
    pub(super) fn glasses_model(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        model: &str,
        reported: Option<&Value>,
        now: Now,
    ) {
        let model = model.trim();
        if model.is_empty() {
            return;
        }
        if model.len() > MAX_MODEL_NAME {
            self.refused("INVALID_GLASSES_MODEL");
            return;
        }
        let (caps, known) = match (capabilities::known(model), reported) {
            (Some(c), _) => (c, true),
            (None, Some(r)) => (capabilities::reported(model, r), false),
            (None, None) => (capabilities::conservative(Some(model)), false),
        };
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let current = s.capabilities.as_deref();
        // A bare name of an unknown model (core_status_update) keeps what its glasses reported.
        let same_unknown = !known
            && reported.is_none()
            && current.is_some_and(|c| c["modelName"].as_str() == Some(model));
        if same_unknown || current == Some(&caps) {
            return;
        }
        let user = s.user.clone();
        s.capabilities = Some(Box::new(caps));
        if !known {
            self.refused("UNKNOWN_GLASSES_MODEL");
        }
        log::info!("event=glasses_model session={user:?} model={model:?} known={known}");
        let Some(s) = self.session(sk) else { return };
        let Some(caps) = s.capabilities.as_deref() else {
            return;
        };
        let msg = CapabilitiesUpdate {
            kind: "capabilities_update",
            capabilities: caps,
            model_name: caps["modelName"].as_str().unwrap_or(model),
            timestamp: now.iso(),
        };
        for run in s.apps.values() {
            if let Some(conn) = run.conn {
                net.send_json(conn, &msg);
            }
        }
    }
}
