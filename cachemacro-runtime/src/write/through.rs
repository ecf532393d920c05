//! Write-through: the source first, then the cache (a generated `*_put`).

use std::future::Future;

use crate::error::Error;

/// Write-through: writes the source first, then puts the written value in the cache.
///
/// `write` is the write to the source of truth; `put` stores its result in the cache,
/// usually a generated `*_put` (which updates every tier and every process's L1, and on a
/// cache failure invalidates the key instead, so it is never left stale). A cache failure
/// does not fail the write: it is logged and the write's result returned.
///
/// ```
/// # use cachemacro_runtime::{cached, write_through};
/// # #[derive(Clone)] struct User { id: u64, name: String }
/// # async fn db_save(u: User) -> Result<User, std::io::Error> { Ok(u) }
/// #[cached(ttl = "10m", key = "user:<id>")]
/// async fn get_user(id: u64) -> Result<User, std::io::Error> {
///     # Ok(User { id, name: String::new() })
///     // … read from the database
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let user = User { id: 7, name: "Ada".into() };
/// let saved = write_through(db_save(user), |u: &User| get_user_put(u.id, u.clone())).await?;
/// assert_eq!(get_user(7).await?.name, "Ada"); // served from the cache, already updated
/// # Ok(()) }
/// ```
pub async fn write_through<T, E, W, P, PF>(write: W, put: P) -> Result<T, E>
where
    W: Future<Output = Result<T, E>>,
    P: FnOnce(&T) -> PF,
    PF: Future<Output = Result<(), Error>>,
{
    let written = write.await?;
    if let Err(e) = put(&written).await {
        tracing::warn!(error = %e, "cachemacro: write-through: the source was written, the cache put failed (the key was invalidated instead)");
    }
    Ok(written)
}
