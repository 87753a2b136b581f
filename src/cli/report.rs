//! `kura report usage`: the usage report (使用状況報告書) of one application and fiscal
//! year written as JSON, CSV and HTML files, against the same data dir and store as
//! `kura serve`; plus the configuration of the alert rules and their webhook, which the
//! server and this command share.
//!
//! Guarantees: the files are the same views the API serves (`report::rendered`); a
//! tampered audit log fails the command naming the broken entry and writes nothing; the
//! generation is itself audited (actor `operator:<OS user>`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::audit::AuditEvent;
use crate::audit::alert::AlertRules;
use crate::audit::alert::webhook::{self, Webhook};
use crate::cli::ConfigArgs;
use crate::config::{Config, process_env};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Usage report of one application and fiscal year / 使用状況報告書
    Usage(UsageArgs),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Application (approval) id, e.g. A-2026-0001.
    #[arg(long)]
    pub application: String,
    /// Fiscal year (April–March), e.g. 2026.
    #[arg(long)]
    pub fy: i32,
    /// Output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
}

/// The alert rules of a configuration: `alert_rules_dir`, else the embedded ones.
pub fn alert_rules(cfg: &Config) -> Result<AlertRules, String> {
    match &cfg.alert_rules_dir {
        Some(dir) => AlertRules::load_dir(dir),
        None => AlertRules::embedded(),
    }
    .map_err(|e| e.to_string())
}

/// Start the webhook notifier if `alert_webhook_url` is set.
pub fn webhook(cfg: &Config, store: &Store) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(url) = &cfg.alert_webhook_url else {
        return Ok(None);
    };
    let hook = Webhook::parse(url).map_err(|e| e.to_string())?;
    let every = std::time::Duration::from_secs(5);
    Ok(Some(webhook::spawn(store.clone(), hook, every)))
}

/// `kura report …`.
pub async fn run(command: ReportCommand) -> Result<ExitCode, String> {
    match command {
        ReportCommand::Usage(args) => usage(args).await,
    }
}

async fn usage(args: UsageArgs) -> Result<ExitCode, String> {
    let cfg = args.config.load()?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = crate::cli::admin::open_store(&cfg, key, crate::store::Opening::Tool).await?;
    let app = store
        .application(&args.application)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "application {} not found / 申請が見つかりません",
                args.application
            )
        })?;
    let today = crate::policy::today();
    let r = crate::report::usage_report(&store, &app, args.fy, today)
        .await
        .map_err(|e| e.to_string())?;
    let written = crate::report::write_files(&r, &args.out)?;
    let operator = format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let ev = AuditEvent::ok(
        &operator,
        "report.usage",
        Some(&app.id),
        json!({"fiscal_year": args.fy, "via": "cli"}),
    );
    store.record(&ev).await.map_err(|e| e.to_string())?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
