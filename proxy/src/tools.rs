//! What each site's tools promise, learned from `tools/list` answers as they pass through:
//! a `tools/call` of a tool marked `readOnlyHint` or `idempotentHint` may be retried on
//! another site; any other call is never repeated.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;

/// The retry-relevant annotations of one tool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hints {
    /// `annotations.readOnlyHint`.
    pub read_only: bool,
    /// `annotations.idempotentHint`.
    pub idempotent: bool,
}

impl Hints {
    /// Whether a call may be sent again after a failure.
    pub(crate) fn repeatable(self) -> bool {
        self.read_only || self.idempotent
    }
}

/// Most tools remembered per site (a bound against hostile upstreams).
const MAX_TOOLS_PER_SITE: usize = 4096;

/// Tools by site, then by name.
#[derive(Default)]
pub(crate) struct ToolCatalog {
    sites: RwLock<HashMap<String, HashMap<String, Hints>>>,
}

impl ToolCatalog {
    /// Learns from the JSON-RPC answer to a `tools/list` sent to `site` (plain JSON or SSE).
    /// Returns how many tools were learned.
    pub(crate) fn learn(&self, site: &str, answer: &[u8]) -> usize {
        let Some(message) = crate::mcp::message_of(answer) else {
            return 0;
        };
        let Some(tools) = message.pointer("/result/tools").and_then(Value::as_array) else {
            return 0;
        };
        let mut learned = HashMap::new();
        for tool in tools.iter().take(MAX_TOOLS_PER_SITE) {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let flag = |key: &str| {
                tool.pointer(&format!("/annotations/{key}"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            };
            learned.insert(
                name.to_string(),
                Hints {
                    read_only: flag("readOnlyHint"),
                    idempotent: flag("idempotentHint"),
                },
            );
        }
        let n = learned.len();
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        // A paginated list adds to what is known; a full one replaces entries it names.
        sites.entry(site.to_string()).or_default().extend(learned);
        n
    }

    /// The hints of `tool` on `site`, else as any other site describes it.
    pub(crate) fn hints(&self, site: &str, tool: &str) -> Option<Hints> {
        let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
        sites
            .get(site)
            .and_then(|t| t.get(tool))
            .or_else(|| sites.values().find_map(|t| t.get(tool)))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_annotations_and_judges_calls() {
        let catalog = ToolCatalog::default();
        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"echo","annotations":{"readOnlyHint":true}},
            {"name":"put","annotations":{"idempotentHint":true}},
            {"name":"increment","annotations":{"readOnlyHint":false}},
            {"name":"bare"}]}}"#;
        assert_eq!(catalog.learn("a", answer), 4);
        assert!(catalog.hints("a", "echo").is_some_and(Hints::repeatable));
        assert!(
            catalog.hints("b", "put").is_some_and(Hints::repeatable),
            "other sites' knowledge counts"
        );
        assert!(!catalog
            .hints("a", "increment")
            .is_some_and(Hints::repeatable));
        assert!(!catalog.hints("a", "bare").is_some_and(Hints::repeatable));
        assert_eq!(catalog.hints("a", "unknown"), None);
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"s\",\"annotations\":{\"readOnlyHint\":true}}]}}\n\n";
        assert_eq!(catalog.learn("a", sse), 1);
        assert_eq!(catalog.learn("a", b"garbage"), 0);
    }
}
