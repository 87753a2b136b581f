//! Query stage, refusals: why the gateway did not release an answer, classified by who
//! must act, with a stable code and a bilingual message that names the fix.
//!
//! Guarantees: no message carries a data value or an object outside the caller's scope
//! (data-plane errors speak through [`QueryError::public_message`]); every refusal that
//! reached the data plane, or was refused by policy, carries the query id as its
//! reference, the same id its audit event carries.

use crate::policy::Denial;
use crate::policy::workflow::FieldError;
use crate::privacy::DisclosureMode;
use crate::privacy::budget::BudgetRefusal;
use crate::query::QueryError;
use crate::store::StoreError;

/// A query the gateway did not answer. `reference` is the query id when the refusal was
/// audited under it; `None` means the protocol layer gives it a fresh reference.
#[derive(Debug, thiserror::Error)]
#[error("query refused ({})", .cause.code())]
pub struct Refused {
    pub reference: Option<String>,
    #[source]
    pub cause: Refusal,
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The enforcement point refused (not named, term over, revoked, …).
    #[error("{}", .0.message)]
    Denied(Denial),
    /// A disclosure mode other than the approved one was asked for.
    #[error("mode {requested} is not approved (approved: {approved})")]
    ModeNotApproved {
        approved: DisclosureMode,
        requested: DisclosureMode,
    },
    /// The request itself is malformed (ε, bounds); `fields` names each problem.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        fields: Vec<FieldError>,
    },
    /// The DP dry run was asked for on a suppression approval.
    #[error("the dry run is for DP applications")]
    NotDp,
    /// ε asked exceeds what is left this fiscal year.
    #[error("budget exhausted for {application}")]
    BudgetExhausted {
        application: String,
        refusal: BudgetRefusal,
    },
    /// The scope's extract is missing or destroyed (an operator problem).
    #[error("the extract is missing or destroyed")]
    ExtractMissing,
    /// The data plane refused or failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A DP query failed after the data plane was asked to run it: patient data may have
    /// been read, so its reserved ε was spent. Same code and status as the failure.
    #[error("{cause} (ε={epsilon} spent)")]
    SpentAfterRead { epsilon: f64, cause: QueryError },
    /// The control-plane store failed (no audit, no answer).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The user already runs as many queries as one user may.
    #[error("{limit} queries already running")]
    TooManyQueries { limit: usize },
}

impl Refused {
    pub fn new(reference: Option<&str>, cause: impl Into<Refusal>) -> Self {
        Self {
            reference: reference.map(str::to_string),
            cause: cause.into(),
        }
    }
}

impl Refused {
    /// The refusal of a DP run that failed after reading data: says that its `epsilon`
    /// was spent. A record that did not commit (a store error) is left as it is: its
    /// reservation stays open and the store converts it to spent.
    pub fn spent_after_read(self, epsilon: f64) -> Self {
        match self.cause {
            Refusal::Query(cause) => Self {
                reference: self.reference,
                cause: Refusal::SpentAfterRead { epsilon, cause },
            },
            cause => Self { cause, ..self },
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Self::new(None, e)
    }
}

impl Refusal {
    /// Stable snake_case code, as in `shared/API.md`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied(d) => d.code,
            Self::ModeNotApproved { .. } => "forbidden",
            Self::InvalidRequest { .. } | Self::NotDp => "invalid_request",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::ExtractMissing => "internal",
            Self::Query(q) | Self::SpentAfterRead { cause: q, .. } => q.code(),
            Self::Store(StoreError::Conflict(_)) => "conflict",
            Self::Store(_) => "internal",
            Self::TooManyQueries { .. } => "too_many_queries",
        }
    }

    /// HTTP status class of the refusal (Flight maps the same classes to its statuses).
    pub fn status(&self) -> u16 {
        match self {
            Self::Denied(_) | Self::ModeNotApproved { .. } => 403,
            Self::InvalidRequest { .. } | Self::NotDp => 400,
            Self::BudgetExhausted { .. } | Self::Store(StoreError::Conflict(_)) => 409,
            Self::ExtractMissing | Self::Store(_) => 500,
            Self::Query(q) | Self::SpentAfterRead { cause: q, .. } => q.http_status(),
            Self::TooManyQueries { .. } => 429,
        }
    }

    /// The message the caller may see: what was wrong and how to fix it.
    pub fn public_message(&self) -> String {
        match self {
            Self::Denied(d) => d.message.clone(),
            Self::ModeNotApproved { approved, .. } => format!(
                "This approval releases results in `{approved}` mode only; omit `mode` or use that mode. / この承認で許可された開示方式は {approved} のみです。"
            ),
            Self::InvalidRequest { message, .. } => message.clone(),
            Self::NotDp => "This approval releases results with small-cell suppression, which spends no budget; the dry run is for DP applications. / この承認は秘匿処理（セル抑制）方式のため、予算の見積もりは不要です。".into(),
            Self::BudgetExhausted {
                application,
                refusal,
            } => budget_message(application, refusal),
            Self::ExtractMissing => "The data of this scope is not available; please report the reference id. / 対象データが利用できません。参照 ID を添えて報告してください。".into(),
            Self::Query(q) => q.public_message(),
            Self::SpentAfterRead { epsilon, cause } => format!(
                "{} The query had started reading data, so its ε={epsilon} is spent: a failed DP query costs the same as an answer, and running it again spends ε again. Change the query first; quote the reference id to the operator if the cause is unclear. / クエリはデータの読み取りを開始していたため、ε={epsilon} は消費されました（失敗した DP クエリも回答と同じく予算を消費し、再実行すると再び消費します）。クエリを修正してから実行してください。原因が不明な場合は参照 ID を運用担当者にお伝えください。",
                cause.public_message()
            ),
            Self::Store(StoreError::Conflict(msg)) => msg.clone(),
            Self::Store(_) => "An internal error occurred; please report the reference id. / 内部エラーが発生しました。参照 ID を添えて報告してください。".into(),
            Self::TooManyQueries { limit } => format!(
                "You already have {limit} queries running, the most one user may run at once; wait for one to finish, then send this again. / 同時に実行できるクエリは 1 人 {limit} 件までです。実行中のクエリの終了後に再送してください。"
            ),
        }
    }
}

/// The `budget_exhausted` message: what was asked, what is left, and when it renews.
fn budget_message(application: &str, r: &BudgetRefusal) -> String {
    let (eps, fy) = (r.epsilon_requested, r.fiscal_year);
    format!(
        "The query needs ε={eps}, but application {application} has ε={:.3} left of its ε={:.3} budget for fiscal year {fy}. The budget renews on {}. Lower ε, re-run an identical earlier query (its stored answer is free), or ask the reviewer for more budget. / プライバシー予算が不足しています。要求 ε={eps}、残り ε={:.3}（{fy} 年度の予算 ε={:.3}）。予算は {} に更新されます。ε を下げるか、同一のクエリを再実行する（保存済みの回答は予算を消費しません）か、審査担当者に予算の追加を依頼してください。",
        r.epsilon_remaining,
        r.epsilon_budget,
        r.renews_on,
        r.epsilon_remaining,
        r.epsilon_budget,
        r.renews_on.format("%Y年%-m月%-d日"),
    )
}
