//! `kura report usage`: the usage report (使用状況報告書) of one application and fiscal
//! year written as JSON, CSV, HTML and PDF files; `kura report annual`: the annual report
//! (seed 001 items 10 and 12) of a fiscal year in the same four formats — both against the
//! same data dir and store as `kura serve`; plus the configuration of the alert rules and
//! their webhook, which the server and this command share.
//!
//! Guarantees: the files are the same views the API serves (`report::rendered`,
//! `report::annual_rendered`); a tampered audit log fails the usage report naming the
//! broken entry and writes nothing; a missing Japanese font fails before anything is
//! generated; every generation is itself audited (actor `operator:<OS user>`), the annual
//! report with its ledger entry in one transaction.

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
    /// Annual report of a fiscal year (seed 001 items 10, 12) / 年次報告
    Annual(AnnualArgs),
}

#[derive(Debug, Args)]
pub struct AnnualArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Fiscal year (April–March), e.g. 2025.
    #[arg(long)]
    pub fy: i32,
    /// Only this manufacturer's products (the report a PMS team receives), e.g. M01.
    #[arg(long)]
    pub manufacturer: Option<String>,
    /// Output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
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
        ReportCommand::Annual(args) => annual(args).await,
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
    crate::report::pdf::ReportFont::find(cfg.report_font.as_deref()).map_err(|e| e.to_string())?;
    let r = crate::report::usage_report(&store, &app, args.fy, today)
        .await
        .map_err(|e| e.to_string())?;
    let written = crate::report::write_files(&r, &args.out, cfg.report_font.as_deref())?;
    let operator = operator();
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

/// The actor of a command-line generation: `operator:<OS user>`.
fn operator() -> String {
    format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

async fn annual(args: AnnualArgs) -> Result<ExitCode, String> {
    use crate::report::annual::{self, Audience, Definitions};
    let cfg = args.config.load()?;
    crate::report::pdf::ReportFont::find(cfg.report_font.as_deref()).map_err(|e| e.to_string())?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = crate::cli::admin::open_store(&cfg, key, crate::store::Opening::Tool).await?;
    let extract_key = cfg
        .secret("extract_key", &process_env)
        .map_err(|e| e.to_string())?;
    let catalog = std::sync::Arc::new(crate::cli::admin::load_catalog(&cfg)?);
    let plane: std::sync::Arc<dyn crate::query::plane::DataPlane> =
        std::sync::Arc::new(crate::cli::admin::open_plane(&cfg, &extract_key, &catalog).await?);
    let defs = match &cfg.annual_reports_dir {
        Some(dir) => Definitions::load_dir(dir, &catalog),
        None => Definitions::embedded(&catalog),
    }
    .map_err(|e| e.to_string())?;
    let audience = match &args.manufacturer {
        Some(m) => Audience::Manufacturer(m.clone()),
        None => Audience::All,
    };
    let detail = json!({"via": "cli", "format": "json,csv,html,pdf"});
    let report = annual::generate(
        &store,
        &plane,
        &defs,
        args.fy,
        &audience,
        &operator(),
        detail,
        crate::privacy::Defences::ALL,
    )
    .await
    .map_err(|e| crate::errors::chain(&e))?;
    for p in crate::report::write_annual_files(&report, &args.out, cfg.report_font.as_deref())? {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
