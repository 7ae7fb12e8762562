//! Reading and writing [`Frame`]s on QUIC streams, with the sans-IO [`FrameDecoder`] doing the
//! reassembly.

use wardlink_shared::wire::{self, Frame, FrameDecoder, WireError};

/// Bytes requested from the stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// A frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// Writing the stream failed.
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading the stream failed.
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer sent a malformed or oversized frame.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
}

/// Encodes and sends one frame.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), FrameIoError> {
    send.write_all(&wire::encode(frame)?).await?;
    Ok(())
}

/// The next frame, or `None` when the peer finished the stream.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Frame>, FrameIoError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(READ_CHUNK, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes),
            None => return Ok(None),
        }
    }
}
