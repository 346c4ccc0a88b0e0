//! `certctl auth whoami [-o json|yaml]`: the username and groups the
//! approver took from this credential (CreateSelfSubjectReview), printed
//! as `kubectl auth whoami` prints them. The first thing to check when a
//! request is refused or another's is not shown.
//!
//! It only reads.

use anyhow::{Result, bail};
use certsign_proto::v1 as pb;

use crate::cli::{Output, WhoamiArgs};
use crate::config::Settings;
use crate::conn;
use crate::kube::{to_json, to_yaml};
use crate::output::emit;

/// Runs `auth whoami`.
pub(super) async fn whoami(settings: Settings, a: WhoamiArgs) -> Result<()> {
    if !matches!(a.output, None | Some(Output::Json | Output::Yaml)) {
        bail!("auth whoami prints a table, -o json or -o yaml");
    }
    let mut conn = conn::connect(&settings).await?;
    let who = conn
        .client
        .create_self_subject_review(pb::CreateSelfSubjectReviewRequest {})
        .await
        .map_err(|s| conn::status_error(&s, &conn.url, None))?
        .into_inner()
        .user_info
        .unwrap_or_default();
    let review = serde_json::json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": who.username, "groups": who.groups}},
    });
    emit(&match a.output {
        Some(Output::Json) => to_json(&review)?,
        Some(Output::Yaml) => to_yaml(&review)?,
        _ => table(&who),
    });
    Ok(())
}

/// kubectl's table: ATTRIBUTE and VALUE, groups as `[a b]`.
fn table(who: &pb::UserInfo) -> String {
    format!(
        "ATTRIBUTE   VALUE\nUsername    {}\nGroups      [{}]\n",
        who.username,
        who.groups.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_kubectls() {
        let who = pb::UserInfo {
            username: "alice".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        assert_eq!(
            table(&who),
            "ATTRIBUTE   VALUE\nUsername    alice\nGroups      [dev system:authenticated]\n"
        );
    }
}
