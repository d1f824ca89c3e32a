//! The driver's one timer: it points at the machine's next wake-up and is
//! re-armed only when that moment moves (a timer registration per turn
//! would cost every command a lock on tokio's timer wheel).

use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

/// The driver's one timer (see `Driver::arm_timer`). Its `Sleep` is made on
/// first use, so it belongs to the runtime the driver runs on (a `Sleep`
/// binds to the runtime current where it is created, and the driver is
/// built on the caller's).
#[derive(Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Where it points; `None`: disarmed.
    pub(crate) at: Option<Instant>,
}

impl Timer {
    /// Scheduler wake-ups come in whole milliseconds from a wall clock, so
    /// the same one maps to a slightly different `Instant` on every turn. A
    /// timer already armed up to this much *earlier* is kept: at worst it
    /// fires a little early, the turn finds nothing due and re-arms it.
    const SLACK: Duration = Duration::from_millis(1);

    pub(crate) fn point_at(&mut self, at: Option<Instant>) {
        match (self.at, at) {
            (_, None) => self.at = None,
            (Some(armed), Some(at)) if armed <= at && at - armed < Self::SLACK => {}
            (_, Some(at)) => {
                match &mut self.sleep {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                self.at = Some(at);
            }
        }
    }

    /// Until the moment it points to (forever if it was never armed).
    pub(crate) async fn wait(&mut self) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one timer is re-armed only when its moment moves: later by less
    /// than the slack keeps it (it fires a little early, which is harmless),
    /// earlier or much later re-arms it, `None` disarms it.
    #[tokio::test(start_paused = true)]
    async fn the_timer_is_rearmed_only_when_its_moment_moves() {
        let base = Instant::now();
        let ms = Duration::from_millis;
        let mut timer = Timer::default();
        assert_eq!(timer.at, None);
        timer.point_at(Some(base + ms(10)));
        assert_eq!(timer.at, Some(base + ms(10)));
        timer.point_at(Some(base + ms(10) + Duration::from_micros(600)));
        assert_eq!(timer.at, Some(base + ms(10)), "within the slack: kept");
        timer.point_at(Some(base + ms(5)));
        assert_eq!(timer.at, Some(base + ms(5)), "earlier: re-armed");
        timer.point_at(Some(base + ms(7)));
        assert_eq!(
            timer.at,
            Some(base + ms(7)),
            "later beyond the slack: re-armed"
        );
        timer.point_at(None);
        assert_eq!(timer.at, None);

        // It fires at the moment it points to.
        timer.point_at(Some(base + ms(20)));
        timer.wait().await;
        assert_eq!(Instant::now(), base + ms(20));
    }
}
