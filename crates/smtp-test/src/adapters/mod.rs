//! [`Adapter`](crate::Adapter) implementations, one per runtime adapter crate.

mod tokio;

pub use self::tokio::Tokio;

mod mio;
mod smol;

pub use self::mio::Mio;
pub use self::smol::Smol;
