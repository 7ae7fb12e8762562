//! The control stream after the handshake: commands down to the edge (acknowledgements and,
//! later, silences and settings), confirmations and keep-alives up.
//!
//! Commands are queued in the store; on every connection the edge is sent whatever it has not
//! confirmed, then each new one as it is queued. Commands are idempotent, so a command sent
//! again after a reconnect does no harm.

use wardlink_io::frames::{read_frame, write_frame};
use wardlink_shared::EdgeId;
use wardlink_shared::wire::{Frame, FrameDecoder};

use super::IngressError;
use crate::store::Store;

/// Runs until the edge closes its control stream or the connection fails.
pub(super) async fn run(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    edge: EdgeId,
    store: Store,
) -> Result<(), IngressError> {
    let mut queued = store.commands_changed();
    let mut sent = 0u64;
    let mut dec = FrameDecoder::new();
    loop {
        for (seq, command) in store.pending_commands(edge.clone()).await? {
            if seq > sent {
                write_frame(&mut send, &Frame::Command { seq, command }).await?;
                sent = seq;
            }
        }
        tokio::select! {
            changed = queued.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            frame = read_frame(&mut recv, &mut dec) => match frame? {
                Some(Frame::CommandAck { seq }) => store.commands_done(edge.clone(), seq).await??,
                Some(Frame::Ping { nonce }) => write_frame(&mut send, &Frame::Pong { nonce }).await?,
                None => return Ok(()),
                Some(_) => {
                    return Err(IngressError::Protocol("unexpected frame on the control stream".into()));
                }
            },
        }
    }
}
