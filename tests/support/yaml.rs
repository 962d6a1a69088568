//! The one base config for daemon tests: a listener on port 0, one hub `notifications`, a
//! `status` template (target `statusUpdate`) and a `status` route at `/api/status` behind an
//! API key, with hooks for the SignalR section, extra templates, routes and whole sections.

/// The API key of the base `status` route.
pub const API_KEY: &str = "herald-test-api-key-0123456789abcdef";

/// A daemon config under construction; [`DaemonYaml::build`] writes the YAML text.
#[derive(Debug, Clone)]
pub struct DaemonYaml {
    /// Lines under `signalr:` (none: the section is left out, so the service comes from
    /// `AzureSignalRConnectionString`).
    signalr: String,
    http: String,
    hub: String,
    arguments: String,
    api_key: Option<String>,
    status_route: String,
    templates: String,
    routes: String,
    sections: String,
}

impl DaemonYaml {
    /// The embedded service on `127.0.0.1:0`.
    pub fn embedded() -> Self {
        Self::with_signalr("  embedded:\n    listen: 127.0.0.1:0\n")
    }

    /// No `signalr` section: Azure, from the `AzureSignalRConnectionString` variable.
    pub fn azure() -> Self {
        Self::with_signalr("")
    }

    /// `signalr.connection_string: CS`.
    pub fn connection_string(cs: &str) -> Self {
        Self::with_signalr(&format!("  connection_string: \"{cs}\"\n"))
    }

    fn with_signalr(signalr: &str) -> Self {
        DaemonYaml {
            signalr: signalr.to_string(),
            http: String::new(),
            hub: " {}".to_string(),
            arguments: r#"["{{ status | default('ok') }}"]"#.to_string(),
            api_key: Some(API_KEY.to_string()),
            status_route: String::new(),
            templates: String::new(),
            routes: String::new(),
            sections: String::new(),
        }
    }

    /// Extra lines under `signalr.embedded` (indented four spaces).
    pub fn embedded_extra(mut self, lines: &str) -> Self {
        self.signalr.push_str(lines);
        self
    }

    /// Extra lines under `http` (indented two spaces).
    pub fn http(mut self, lines: &str) -> Self {
        self.http.push_str(lines);
        self
    }

    /// The body of hub `notifications`, as lines indented four spaces (default `{}`).
    pub fn hub(mut self, lines: &str) -> Self {
        self.hub = format!("\n{}", lines.trim_end_matches('\n'));
        self
    }

    /// The `status` template's `arguments` value: flow YAML, or a block starting with `\n`.
    pub fn arguments(mut self, value: &str) -> Self {
        self.arguments = value.to_string();
        self
    }

    /// The `status` route's API key (default [`API_KEY`]).
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    /// The `status` route without an API key.
    pub fn open_route(mut self) -> Self {
        self.api_key = None;
        self
    }

    /// Extra lines under the `status` route (indented four spaces).
    pub fn status_route(mut self, lines: &str) -> Self {
        self.status_route.push_str(lines);
        self
    }

    /// More templates (entries indented two spaces).
    pub fn templates(mut self, lines: &str) -> Self {
        self.templates.push_str(lines);
        self
    }

    /// More routes (entries indented two spaces).
    pub fn routes(mut self, lines: &str) -> Self {
        self.routes.push_str(lines);
        self
    }

    /// Whole top-level sections (`state:`, `schedules:`, `cors:` ...), written last.
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push_str(text);
        if !self.sections.ends_with('\n') {
            self.sections.push('\n');
        }
        self
    }

    pub fn build(&self) -> String {
        let mut y = String::new();
        if !self.signalr.is_empty() {
            y.push_str("signalr:\n");
            y.push_str(&self.signalr);
        }
        y.push_str("http:\n  listen: 127.0.0.1:0\n");
        y.push_str(&self.http);
        y.push_str(&format!("hubs:\n  notifications:{}\n", self.hub));
        y.push_str("templates:\n  status:\n    target: statusUpdate\n");
        y.push_str(&format!("    arguments: {}\n", self.arguments));
        y.push_str(&self.templates);
        y.push_str("routes:\n  status:\n    path: /api/status\n    hub: notifications\n");
        y.push_str("    template: status\n");
        if let Some(key) = &self.api_key {
            y.push_str(&format!("    auth: {{api_key: {key}}}\n"));
        }
        y.push_str(&self.status_route);
        y.push_str(&self.routes);
        y.push_str(&self.sections);
        y
    }
}
