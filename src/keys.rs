//! `jobdock keys create|list|revoke`: managing API keys from the command line (DESIGN §11).

use anyhow::Context;
use sqlx::PgPool;

use crate::api::auth::generate_key;
use crate::config::KeysAction;
use crate::store::{self, api_keys::Revoked};
use crate::tenant::{validate_tenant_name, Scopes};

/// Carries out `action` and returns what to print on stdout.
///
/// # Errors
/// Invalid arguments (say which), an unknown key, or a database error.
pub async fn run(pool: &PgPool, action: KeysAction) -> anyhow::Result<String> {
    match action {
        KeysAction::Create {
            tenant,
            name,
            scopes,
        } => {
            validate_tenant_name(&tenant).map_err(anyhow::Error::msg)?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 100 && !name.contains('\0'),
                "--name must be 1 to 100 characters"
            );
            let scopes = Scopes::parse(&scopes).map_err(anyhow::Error::msg)?;
            let (key, digest) = generate_key();
            let id = store::api_keys::create(pool, &tenant, name, &scopes.names(), &digest)
                .await
                .context("cannot store the key")?;
            tracing::info!(id, tenant, scopes = %scopes.names().join(","), "API key created");
            Ok(format!("{key}\n"))
        }
        KeysAction::List => {
            let rows = store::api_keys::list(pool).await?;
            let when = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map(|at| at.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".to_owned())
            };
            let mut table = vec![[
                "ID",
                "TENANT",
                "NAME",
                "SCOPES",
                "CREATED",
                "LAST USED",
                "REVOKED",
            ]
            .map(str::to_owned)];
            for row in rows {
                table.push([
                    row.id.to_string(),
                    row.tenant,
                    row.name,
                    row.scopes.join(","),
                    when(Some(row.created_at)),
                    when(row.last_used_at),
                    when(row.revoked_at),
                ]);
            }
            Ok(render_table(&table))
        }
        KeysAction::Revoke { id } => match store::api_keys::revoke(pool, id).await? {
            Revoked::Done => Ok(format!(
                "key {id} revoked; every server refuses it within a second\n"
            )),
            Revoked::Already => Ok(format!("key {id} was already revoked\n")),
            Revoked::NotFound => {
                anyhow::bail!("no key with ID {id} (see `jobdock keys list`)")
            }
        },
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
