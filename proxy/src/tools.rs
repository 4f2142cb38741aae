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

/// Most tools remembered per site, across every answer (a bound against hostile upstreams:
/// a paginated or repeated `tools/list` of new names each time must not grow the table).
pub(crate) const MAX_TOOLS_PER_SITE: usize = 4096;
/// Longest tool name remembered (the MCP specification bounds names to 128 characters).
const MAX_TOOL_NAME: usize = 128;

/// What one `tools/list` answer taught.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Learned {
    /// Tools of the answer that are now known (new or updated).
    pub learned: usize,
    /// Tools of the answer left out: the site's table was full, or the name too long.
    pub dropped: usize,
    /// Tools known for the site now.
    pub known: usize,
}

/// Tools by site, then by name.
#[derive(Default)]
pub(crate) struct ToolCatalog {
    sites: RwLock<HashMap<String, HashMap<String, Hints>>>,
}

impl ToolCatalog {
    /// Learns from the JSON-RPC answer to a `tools/list` sent to `site` (plain JSON or SSE).
    /// A paginated list adds to what is known and a full one updates the entries it names;
    /// past [`MAX_TOOLS_PER_SITE`] for the site, new names are left out (known ones are
    /// still updated).
    pub(crate) fn learn(&self, site: &str, answer: &[u8]) -> Learned {
        let Some(message) = crate::mcp::message_of(answer) else {
            return Learned::default();
        };
        let Some(tools) = message.pointer("/result/tools").and_then(Value::as_array) else {
            return Learned::default();
        };
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        let table = sites.entry(site.to_string()).or_default();
        let mut out = Learned::default();
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let known = table.contains_key(name);
            if name.len() > MAX_TOOL_NAME || (!known && table.len() >= MAX_TOOLS_PER_SITE) {
                out.dropped += 1;
                continue;
            }
            let flag = |key: &str| {
                tool.pointer(&format!("/annotations/{key}"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            };
            let hints = Hints {
                read_only: flag("readOnlyHint"),
                idempotent: flag("idempotentHint"),
            };
            table.insert(name.to_string(), hints);
            out.learned += 1;
        }
        out.known = table.len();
        out
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
        assert_eq!(catalog.learn("a", answer).learned, 4);
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
        assert_eq!(catalog.learn("a", sse).learned, 1);
        assert_eq!(catalog.learn("a", b"garbage"), Learned::default());
    }

    /// A `tools/list` answer of `n` tools named `{prefix}{i}`.
    fn page(prefix: &str, n: usize) -> Vec<u8> {
        let tools: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({"name": format!("{prefix}{i}"), "annotations": {"readOnlyHint": true}}))
            .collect();
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_site_table_is_capped_in_total_across_answers() {
        let catalog = ToolCatalog::default();
        let mut last = Learned::default();
        for round in 0..5 {
            last = catalog.learn("hostile", &page(&format!("r{round}-"), 3000));
            assert!(last.known <= MAX_TOOLS_PER_SITE, "round {round}: {last:?}");
        }
        assert_eq!(last.known, MAX_TOOLS_PER_SITE);
        assert_eq!(last.learned, 0);
        assert_eq!(last.dropped, 3000);
        // Known tools are still updated when the table is full; other sites have their own.
        assert_eq!(catalog.learn("hostile", &page("r0-", 10)).learned, 10);
        assert_eq!(catalog.learn("other", &page("x", 10)).known, 10);
        let long = format!(
            r#"{{"result":{{"tools":[{{"name":"{}"}}]}}}}"#,
            "n".repeat(129)
        );
        assert_eq!(catalog.learn("other", long.as_bytes()).dropped, 1);
    }
}
