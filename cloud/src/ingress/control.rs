//! The control stream after the handshake: commands down to the edge (acknowledgements,
//! silences and settings) and, for edges of protocol 2, what their ward views need to check
//! dashboard tokens (sent at once and again at every revocation); confirmations and
//! keep-alives up.
//!
//! Commands are queued in the store; on every connection the edge is sent whatever it has not
//! confirmed, then each new one as it is queued. Commands are idempotent, so a command sent
//! again after a reconnect does no harm.

use std::time::Duration;

use std::sync::Arc;
use tokio::time::Instant;
use wardlink_io::frames::{read_frame, write_frame};
use wardlink_shared::EdgeId;

use wardlink_shared::wire::{EdgeCommand, Frame, FrameDecoder, TokenKeys};

use super::IngressError;
use crate::revocation::RevokedTokens;
use crate::store::Store;

/// The hub's token keys and the revoked tokens, for an edge's ward view.
#[derive(Clone)]
pub(super) struct TokenFeed {
    pub(super) keys: Arc<TokenKeys>,
    pub(super) revoked: tokio::sync::watch::Receiver<RevokedTokens>,
}

impl TokenFeed {
    fn frame(&mut self) -> Frame {
        let revoked = self.revoked.borrow_and_update();
        Frame::Tokens(TokenKeys {
            revoked: revoked.iter().map(|(id, exp)| (id.clone(), *exp)).collect(),
            ..(*self.keys).clone()
        })
    }

    async fn changed(feed: &mut Option<TokenFeed>) {
        let open = match feed {
            Some(f) => f.revoked.changed().await.is_ok(),
            None => false,
        };
        if !open {
            // No feed, or the hub is stopping: nothing more to send.
            std::future::pending::<()>().await;
        }
    }
}

/// `command` as an edge of protocol `version` reads it: before 3, acknowledgements name no
/// version (such an edge does not number its episodes' worsenings; the hub checked the version
/// against the latest event it has).
fn for_version(command: EdgeCommand, version: u16) -> EdgeCommand {
    match command {
        EdgeCommand::AcknowledgeVersion { alert, by, ts, .. } if version < 3 => {
            EdgeCommand::Acknowledge { alert, by, ts }
        }
        other => other,
    }
}

/// Runs until the edge closes its control stream, the connection fails, or nothing arrives on
/// it (the edge pings every heartbeat) for `silence`.
pub(super) async fn run(
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    edge: EdgeId,
    store: Store,
    silence: Duration,
    (version, mut tokens): (u16, Option<TokenFeed>),
) -> Result<(), IngressError> {
    if let Some(feed) = tokens.as_mut() {
        write_frame(&mut send, &feed.frame()).await?;
    }
    let mut queued = store.commands_changed();
    let mut sent = 0u64;
    let mut dec = FrameDecoder::new();
    let deadline = tokio::time::sleep(silence);
    tokio::pin!(deadline);
    // The store is read at the start and whenever a command was queued, not at every heartbeat.
    let mut check = true;
    loop {
        if check {
            for (seq, command) in store.pending_commands(edge.clone()).await? {
                if seq > sent {
                    let command = for_version(command, version);
                    write_frame(&mut send, &Frame::Command { seq, command }).await?;
                    sent = seq;
                }
            }
            check = false;
        }
        tokio::select! {
            () = &mut deadline => return Err(IngressError::Silent),
            () = TokenFeed::changed(&mut tokens) => {
                if let Some(feed) = tokens.as_mut() {
                    write_frame(&mut send, &feed.frame()).await?;
                }
            }
            changed = queued.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                check = true;
            }
            frame = read_frame(&mut recv, &mut dec) => {
                let frame = frame?;
                deadline.as_mut().reset(Instant::now() + silence);
                match frame {
                    Some(Frame::CommandAck { seq }) => store.commands_done(edge.clone(), seq).await??,
                    Some(Frame::Ping { nonce }) => write_frame(&mut send, &Frame::Pong { nonce }).await?,
                    None => return Ok(()),
                    Some(_) => {
                        return Err(IngressError::Protocol("unexpected frame on the control stream".into()));
                    }
                }
            },
        }
    }
}
