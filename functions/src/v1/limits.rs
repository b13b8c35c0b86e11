//! Rate limits per user, per key and per IP, and the monthly API-call quota. Counters are
//! fixed windows in the table (one atomic add each), so limits hold across Lambda instances.

use axum::http::{HeaderMap, HeaderValue};
use maas_store::records::identity::IdentityRepo;

use super::envelope::{ApiError, Code};

/// `count` requests per `period` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub count: i64,
    pub period: i64,
}

impl std::str::FromStr for Limit {
    type Err = String;

    /// `120/60` = 120 requests per 60 seconds.
    fn from_str(s: &str) -> Result<Self, String> {
        let (count, period) = s.split_once('/').ok_or("a limit is COUNT/SECONDS, e.g. 120/60")?;
        let count = count.trim().parse().map_err(|_| "COUNT must be a number")?;
        let period: i64 = period.trim().parse().map_err(|_| "SECONDS must be a number")?;
        if period <= 0 {
            return Err("SECONDS must be positive".into());
        }
        Ok(Limit { count, period })
    }
}

/// Which budget a route spends (seed 004: training 10/hour, inference 60/min, others 120/min).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Sign-up and sign-in: counted per IP only, as there is no user yet.
    Auth,
    Inference,
    Training,
    Other,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::Inference => "inference",
            Class::Training => "training",
            Class::Other => "other",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateLimits {
    pub auth: Limit,
    pub inference: Limit,
    pub training: Limit,
    pub other: Limit,
    /// Every authenticated request from one IP, whoever sends it.
    pub ip: Limit,
    /// API calls per user per calendar month (UTC).
    pub monthly_calls: i64,
    pub storage_bytes: i64,
    /// Model tokens per user per window, and per calendar month.
    pub inference_tokens: Limit,
    pub monthly_tokens: i64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            auth: Limit { count: 30, period: 60 },
            inference: Limit { count: 60, period: 60 },
            training: Limit {
                count: 10,
                period: 3600,
            },
            other: Limit { count: 120, period: 60 },
            ip: Limit {
                count: 1200,
                period: 60,
            },
            monthly_calls: 100_000,
            storage_bytes: 10 << 30,
            inference_tokens: Limit {
                count: 200_000,
                period: 60,
            },
            monthly_tokens: 10_000_000,
        }
    }
}

impl RateLimits {
    fn of(&self, class: Class) -> Limit {
        match class {
            Class::Auth => self.auth,
            Class::Inference => self.inference,
            Class::Training => self.training,
            Class::Other => self.other,
        }
    }
}

/// Who a request is counted against.
pub struct Subject<'a> {
    pub user_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub ip: &'a str,
}

/// The tightest of the counters a request touched, as the `X-RateLimit-*` headers say it.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub limit: i64,
    pub remaining: i64,
    pub reset: i64,
    pub over: Option<Code>,
    /// Whether a token counter, not a call counter, is the one reported.
    pub tokens: bool,
}

impl Verdict {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", self.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        if self.over.is_some() {
            headers.insert("retry-after", HeaderValue::from(self.retry_after()));
        }
    }

    /// Seconds until the counter that refused the request starts again.
    pub fn retry_after(&self) -> i64 {
        (self.reset - maas_store::now_secs()).max(1)
    }

    pub fn error(&self) -> Option<ApiError> {
        self.over.map(|code| match code {
            Code::Resource004 if self.tokens => ApiError::new(code, TOKENS_USED_UP),
            Code::Resource004 => ApiError::new(code, QUOTA_USED_UP),
            _ => ApiError::new(code, "rate limit exceeded; see X-RateLimit-Reset"),
        })
    }
}

pub const QUOTA_USED_UP: &str = "monthly API call quota used up";
pub const TOKENS_USED_UP: &str = "monthly token quota used up";

/// The month (`YYYY-MM`) and day (`YYYY-MM-DD`) of `now`, UTC.
pub fn month_and_day(now: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let month = format!("{:04}-{:02}", t.year(), t.month() as u8);
    let day = format!("{month}-{:02}", t.day());
    (month, day)
}

/// Counts the request against every limit that applies and says whether it may go ahead.
pub async fn check(
    repo: &IdentityRepo,
    limits: &RateLimits,
    class: Class,
    who: Subject<'_>,
) -> Result<Verdict, maas_store::StoreError> {
    let now = maas_store::now_secs();
    let class_limit = limits.of(class);
    let ip_limit = if who.user_id.is_some() { limits.ip } else { class_limit };
    let mut counters = vec![(format!("ip:{}#{}", who.ip, class.name()), ip_limit)];
    if let Some(user) = who.user_id {
        counters.push((format!("user:{user}#{}", class.name()), class_limit));
    }
    if let Some(key) = who.key_id {
        counters.push((format!("key:{key}#{}", class.name()), class_limit));
    }
    let adds = counters.iter().map(|(scope, limit)| {
        let window = now / limit.period;
        let reset = (window + 1) * limit.period;
        async move {
            let n = repo
                .count(&format!("RL#{scope}"), &window.to_string(), 1, Some(reset + 60))
                .await?;
            Ok::<_, maas_store::StoreError>(Verdict {
                limit: limit.count,
                remaining: (limit.count - n).max(0),
                reset,
                over: (n > limit.count).then_some(Code::TooManyRequests),
                tokens: false,
            })
        }
    });
    let verdicts = futures::future::try_join_all(adds).await?;
    let mut verdict = verdicts
        .into_iter()
        .min_by_key(|v| (v.over.is_none(), v.remaining))
        .expect("at least the IP counter");
    if let (Some(user), None) = (who.user_id, verdict.over) {
        if count_usage(repo, user, class, now).await? > limits.monthly_calls {
            verdict.over = Some(Code::Resource004);
        }
    }
    if let (Some(user), None, Class::Inference) = (who.user_id, verdict.over, class) {
        verdict = tokens_left(repo, limits, user, now).await?.unwrap_or(verdict);
    }
    Ok(verdict)
}

/// The token counters' verdict when one of them is used up, refusing the call.
async fn tokens_left(
    repo: &IdentityRepo,
    limits: &RateLimits,
    user: &str,
    now: i64,
) -> Result<Option<Verdict>, maas_store::StoreError> {
    let (month, _) = month_and_day(now);
    let limit = limits.inference_tokens;
    let window = now / limit.period;
    let (rl, usage) = (format!("RL#user:{user}#tokens"), format!("USAGE#{user}"));
    let (window_key, month_key) = (window.to_string(), format!("T#{month}"));
    let (in_window, in_month) = tokio::try_join!(repo.counter(&rl, &window_key), repo.counter(&usage, &month_key),)?;
    let reset = (window + 1) * limit.period;
    Ok(if in_month >= limits.monthly_tokens {
        Some(Verdict {
            limit: limits.monthly_tokens,
            remaining: 0,
            reset: next_month(now),
            over: Some(Code::Resource004),
            tokens: true,
        })
    } else if in_window >= limit.count {
        Some(Verdict {
            limit: limit.count,
            remaining: 0,
            reset,
            over: Some(Code::TooManyRequests),
            tokens: true,
        })
    } else {
        None
    })
}

/// Counts a finished call's tokens against the caller's token window and month, and in the
/// day's usage.
pub async fn meter_tokens(
    repo: &IdentityRepo,
    limits: &RateLimits,
    user: &str,
    tokens: i64,
) -> Result<(), maas_store::StoreError> {
    if tokens <= 0 {
        return Ok(());
    }
    let now = maas_store::now_secs();
    let (month, day) = month_and_day(now);
    let limit = limits.inference_tokens;
    let window = now / limit.period;
    let year = Some(now + 400 * 86400);
    let (rl, usage) = (format!("RL#user:{user}#tokens"), format!("USAGE#{user}"));
    let (window_key, month_key, day_key) = (window.to_string(), format!("T#{month}"), format!("DT#{day}"));
    let window_ttl = Some((window + 1) * limit.period + 60);
    tokio::try_join!(
        repo.count(&rl, &window_key, tokens, window_ttl),
        repo.count(&usage, &month_key, tokens, year),
        repo.count(&usage, &day_key, tokens, year),
    )?;
    Ok(())
}

/// The first second of the next calendar month (UTC).
fn next_month(now: i64) -> i64 {
    let t = time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m) = match t.month() {
        time::Month::December => (t.year() + 1, time::Month::January),
        m => (t.year(), m.next()),
    };
    time::Date::from_calendar_date(y, m, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(now + 31 * 86400)
}

/// Adds the call to the user's monthly and daily usage; returns the month's total.
async fn count_usage(repo: &IdentityRepo, user: &str, class: Class, now: i64) -> Result<i64, maas_store::StoreError> {
    let (month, day) = month_and_day(now);
    let scope = format!("USAGE#{user}");
    let year = Some(now + 400 * 86400);
    let (month_window, day_window) = (format!("M#{month}"), format!("D#{day}#{}", class.name()));
    let (month_total, _) = tokio::try_join!(
        repo.count(&scope, &month_window, 1, year),
        repo.count(&scope, &day_window, 1, year),
    )?;
    Ok(month_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_from_count_slash_seconds() {
        assert_eq!("60/60".parse::<Limit>(), Ok(Limit { count: 60, period: 60 }));
        assert!("60".parse::<Limit>().is_err());
        assert!("60/0".parse::<Limit>().is_err());
    }

    #[test]
    fn the_token_quota_resets_at_the_next_month() {
        assert_eq!(next_month(1_700_000_000), 1_701_388_800); // 2023-11-14 -> 2023-12-01
        assert_eq!(next_month(1_703_980_800), 1_704_067_200); // 2023-12-31 -> 2024-01-01
    }

    #[test]
    fn days_and_months_are_utc() {
        assert_eq!(month_and_day(0), ("1970-01".into(), "1970-01-01".into()));
        assert_eq!(month_and_day(1_700_000_000), ("2023-11".into(), "2023-11-14".into()));
    }
}
