//! An accepted peer connection, as the server sees it: whether a stream on
//! it said hello, and its end when none did in time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TlsConnectInfo};
use tonic::Request;

use super::{Shared, HELLO_TIMEOUT};

/// What the server knows of one accepted connection, shared with the
/// streams on it (through the request's extensions).
pub(super) struct ConnState {
    /// A stream on this connection said a valid hello.
    pub(super) greeted: AtomicBool,
    /// A stream on this connection was refused (and counted).
    pub(super) refused: AtomicBool,
}

#[derive(Clone)]
pub(super) struct ConnInfo(Arc<ConnState>);

pub(super) fn conn_state<T>(request: &Request<T>) -> Option<Arc<ConnState>> {
    let ext = request.extensions();
    ext.get::<ConnInfo>()
        .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
        .map(|c| Arc::clone(&c.0))
}

/// An accepted connection: it ends itself when no stream has said hello
/// within `HELLO_TIMEOUT` (a half-open or silent connection), and counts as
/// refused when it ends without a hello and without a refused stream.
pub(super) struct PeerConn {
    io: tokio::net::TcpStream,
    state: Arc<ConnState>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    shared: Arc<Shared>,
}

impl PeerConn {
    pub(super) fn new(io: tokio::net::TcpStream, shared: Arc<Shared>) -> Self {
        PeerConn {
            io,
            state: Arc::new(ConnState {
                greeted: AtomicBool::new(false),
                refused: AtomicBool::new(false),
            }),
            deadline: Box::pin(tokio::time::sleep(HELLO_TIMEOUT)),
            shared,
        }
    }
}

impl Drop for PeerConn {
    fn drop(&mut self) {
        if !self.state.greeted.load(Relaxed) && !self.state.refused.load(Relaxed) {
            self.shared.counters.refused.fetch_add(1, Relaxed);
        }
    }
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(Arc::clone(&self.state))
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.state.greeted.load(Relaxed) && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no stream said hello in time",
            )));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
