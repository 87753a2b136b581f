//! Operator commands: `kura user add/disable/reset-password` and `kura audit verify`.
//! They act on the same store as the server, so every account change is audited in the
//! same transaction, with actor `operator:<OS user>`.

use std::io::BufRead;
use std::process::ExitCode;

use crate::audit::AuditKey;
use crate::auth;
use crate::cli::{AuditCommand, ConfigArgs, UserCommand};
use crate::config::{Config, process_env};
use crate::store::Store;
use crate::store::model::{NewUser, Role};

fn operator() -> String {
    format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Open the store of a configuration (the data dir must exist).
pub async fn open_store(cfg: &Config, key: AuditKey) -> Result<Store, String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    Store::open(&cfg.db_path(), key).await.map_err(|e| {
        format!(
            "cannot open the control-plane database {}: {e}",
            cfg.db_path().display()
        )
    })
}

fn read_password(stdin: bool) -> Result<(String, bool), String> {
    if stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        auth::check_password_strength(&pw).map_err(|e| e.to_string())?;
        Ok((pw, false))
    } else {
        Ok((auth::random_hex(12).map_err(|e| e.to_string())?, true))
    }
}

pub async fn user_command(args: ConfigArgs, action: UserCommand) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key).await?;
    match action {
        UserCommand::Add {
            username,
            roles,
            manufacturer,
            display_name,
            affiliation,
            title,
            password_stdin,
        } => {
            let roles: Vec<Role> = roles
                .iter()
                .map(|r| Role::parse(r).ok_or_else(|| format!("unknown role `{r}`; use researcher, reviewer, auditor, pms or admin / 不明なロールです")))
                .collect::<Result<_, _>>()?;
            if roles.contains(&Role::Pms) != manufacturer.is_some() {
                return Err("a pms account needs --manufacturer, and only pms accounts take one / pms ロールには --manufacturer が必要です".into());
            }
            let (pw, generated) = read_password(password_stdin)?;
            let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
            store
                .create_user(
                    &NewUser {
                        username: username.clone(),
                        password_hash: hash,
                        roles,
                        manufacturer,
                        display_name,
                        affiliation,
                        title,
                    },
                    &operator(),
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("created {username} / アカウントを作成しました");
            if generated {
                println!("password: {pw}");
            }
        }
        UserCommand::Disable { username } => {
            store
                .set_disabled(&username, true, &operator())
                .await
                .map_err(|e| e.to_string())?;
            println!("disabled {username}; its sessions are revoked / アカウントを無効にしました");
        }
        UserCommand::ResetPassword {
            username,
            password_stdin,
        } => {
            let (pw, generated) = read_password(password_stdin)?;
            let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
            store
                .set_password(&username, &hash, &operator())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "password reset for {username}; lockout cleared, sessions revoked / パスワードを再設定しました"
            );
            if generated {
                println!("password: {pw}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_command(args: ConfigArgs, action: AuditCommand) -> Result<ExitCode, String> {
    let cfg = args.load()?;
    let key = cfg.audit_key(&process_env).map_err(|e| e.to_string())?;
    let store = open_store(&cfg, key).await?;
    match action {
        AuditCommand::Verify => {
            let v = store.verify_audit().await.map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&v).map_err(|e| e.to_string())?);
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}
