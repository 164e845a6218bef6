//! The terminal UI (ratatui): service list with coloured states, info and following log
//! panels, actions with their result in the status bar, help, and a login prompt on 401.
//! It is fed by one long-poll of `GET /services?full=1` (no N+1 requests).

use crate::cli::{elapsed, log_line, sort_services};
use crate::rest::{Client, ClientError, WATCH_SECS};
use mistify_types::supervisor::{Hex, LogRecord, ServiceInfo, State};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use std::cell::Cell;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const APP: &str = "mistify-supervisor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Main,
    Info,
    Log,
    Help,
    Login,
}

/// What the background tasks report.
#[derive(Debug)]
pub enum Update {
    Services(Vec<ServiceInfo>),
    Log(Option<String>, Vec<LogRecord>),
    Error(ClientError),
    ActionDone(String, Result<(), ClientError>),
}

/// What a key asks the run loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Action(&'static str, String),
    FollowLog(Option<String>),
    StopLog,
    Login(String, String),
    Quit,
}

/// The UI state (drawn by [`App::draw`], changed by keys and updates).
pub struct App {
    pub url: String,
    pub services: Vec<ServiceInfo>,
    pub selected: Option<String>,
    pub screen: Screen,
    pub message: Option<(String, bool)>,
    pub error: Option<String>,
    pub log_for: Option<String>,
    pub log: Vec<LogRecord>,
    /// Screen rows scrolled back from the tail (0 = follow).
    pub log_back: usize,
    /// How far back the log can scroll (known once it is drawn).
    log_max_back: Cell<usize>,
    /// An action that waits for its confirmation (`y`).
    pub confirm: Option<(&'static str, String)>,
    pub search: Option<String>,
    searching: bool,
    user: String,
    pass: String,
    on_pass: bool,
    pub quit: bool,
}

fn state_color(s: State) -> Color {
    match s {
        State::Running => Color::Green,
        State::Failed => Color::Red,
        State::Throttled => Color::Magenta,
        State::Waiting => Color::Yellow,
        State::Starting | State::Stopping => Color::Cyan,
        State::Exited => Color::Blue,
        State::Disabled => Color::Gray,
    }
}

impl App {
    pub fn new(url: &str) -> App {
        App {
            url: url.to_string(),
            services: Vec::new(),
            selected: None,
            screen: Screen::Main,
            message: None,
            error: None,
            log_for: None,
            log: Vec::new(),
            log_back: 0,
            log_max_back: Cell::new(usize::MAX),
            confirm: None,
            search: None,
            searching: false,
            user: String::new(),
            pass: String::new(),
            on_pass: false,
            quit: false,
        }
    }

    fn current(&self) -> Option<&ServiceInfo> {
        let n = self.selected.as_ref()?;
        self.services.iter().find(|s| &s.name == n)
    }

    pub fn apply(&mut self, u: Update) {
        match u {
            Update::Services(mut list) => {
                sort_services(&mut list);
                self.services = list;
                self.error = None;
                if self.screen == Screen::Login {
                    self.screen = Screen::Main;
                }
            }
            Update::Log(name, mut records) => {
                if name == self.log_for {
                    self.log.append(&mut records);
                    let excess = self
                        .log
                        .len()
                        .saturating_sub(mistify_types::supervisor::MAX_LOG_RECORDS);
                    self.log.drain(..excess);
                }
            }
            Update::Error(e) => {
                if e.is_unauthorized() {
                    self.screen = Screen::Login;
                }
                self.error = Some(e.to_string());
            }
            Update::ActionDone(what, res) => {
                self.message = Some(match res {
                    Ok(()) => (format!("{what}: done"), true),
                    Err(e) => (format!("{what}: {e}"), false),
                });
            }
        }
    }

    fn move_by(&mut self, delta: isize) {
        if self.services.is_empty() {
            return;
        }
        let idx = self
            .selected
            .as_ref()
            .and_then(|n| self.services.iter().position(|s| &s.name == n));
        let next = match idx {
            None => 0,
            Some(i) => (i as isize + delta).clamp(0, self.services.len() as isize - 1) as usize,
        };
        self.selected = Some(self.services[next].name.clone());
    }

    /// Handles a key; what the run loop should do.
    pub fn on_key(&mut self, k: KeyEvent) -> Option<Command> {
        if k.kind != KeyEventKind::Press {
            return None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return Some(Command::Quit);
        }
        if self.screen == Screen::Login {
            return self.login_key(k);
        }
        if let Some((what, name)) = self.confirm.take() {
            // `y` confirms; any other key cancels.
            if matches!(k.code, KeyCode::Char('y' | 'Y')) {
                return Some(Command::Action(what, name));
            }
            self.message = Some((format!("{what} {name}: cancelled"), true));
            return None;
        }
        if self.searching {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => self.searching = false,
                KeyCode::Backspace => {
                    if let Some(s) = self.search.as_mut() {
                        s.pop();
                    }
                }
                KeyCode::Char(c) => self.search.get_or_insert_with(String::new).push(c),
                _ => {}
            }
            return None;
        }
        let sel = self.selected.clone();
        let code = match k.code {
            KeyCode::Char(c) => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        match code {
            KeyCode::Char('q') | KeyCode::Esc if self.screen != Screen::Main => {
                let was_log = self.screen == Screen::Log;
                self.screen = Screen::Main;
                self.search = None;
                if was_log {
                    return Some(Command::StopLog);
                }
            }
            KeyCode::Char('q') => {
                self.quit = true;
                return Some(Command::Quit);
            }
            KeyCode::Esc => self.selected = None,
            KeyCode::Char('h') | KeyCode::F(1) => self.screen = Screen::Help,
            KeyCode::Up if self.screen == Screen::Log => self.scroll_log(1),
            KeyCode::Down if self.screen == Screen::Log => self.scroll_log(-1),
            KeyCode::PageUp if self.screen == Screen::Log => self.scroll_log(20),
            KeyCode::PageDown if self.screen == Screen::Log => self.scroll_log(-20),
            KeyCode::End if self.screen == Screen::Log => self.log_back = 0,
            KeyCode::Char('/') if self.screen == Screen::Log => {
                self.searching = true;
                self.search = Some(String::new());
            }
            KeyCode::Up => self.move_by(-1),
            KeyCode::Down => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home => self.move_by(-(self.services.len() as isize)),
            KeyCode::End => self.move_by(self.services.len() as isize),
            KeyCode::Enter | KeyCode::Char('i') if sel.is_some() => self.screen = Screen::Info,
            KeyCode::Char('l') => {
                self.screen = Screen::Log;
                self.log_for = sel.clone();
                self.log.clear();
                self.log_back = 0;
                return Some(Command::FollowLog(sel));
            }
            KeyCode::Char('e') => return sel.map(|n| Command::Action("enable", n)),
            KeyCode::Char('c') => return sel.map(|n| Command::Action("clear", n)),
            // Disable and restart stop the service (and the dependents that need it):
            // they ask first.
            KeyCode::Char('d') => self.confirm = sel.map(|n| ("disable", n)),
            KeyCode::Char('r') => self.confirm = sel.map(|n| ("restart", n)),
            _ => {}
        }
        None
    }

    /// Scrolls the log `rows` screen rows back (negative: towards the tail).
    fn scroll_log(&mut self, rows: isize) {
        let back = self.log_back.saturating_add_signed(rows);
        self.log_back = back.min(self.log_max_back.get());
    }

    fn login_key(&mut self, k: KeyEvent) -> Option<Command> {
        let field = if self.on_pass {
            &mut self.pass
        } else {
            &mut self.user
        };
        match k.code {
            KeyCode::Esc => {
                self.quit = true;
                return Some(Command::Quit);
            }
            KeyCode::Tab | KeyCode::Enter if !self.on_pass => self.on_pass = true,
            KeyCode::Enter | KeyCode::Tab => {
                self.on_pass = false;
                self.screen = Screen::Main;
                self.error = None;
                return Some(Command::Login(self.user.clone(), self.pass.clone()));
            }
            KeyCode::BackTab => self.on_pass = false,
            KeyCode::Backspace => {
                field.pop();
            }
            KeyCode::Char('u') | KeyCode::Char('w')
                if k.modifiers.contains(KeyModifiers::CONTROL) =>
            {
                field.clear()
            }
            KeyCode::Char(c) if field.len() < 256 => field.push(c),
            _ => {}
        }
        None
    }

    fn keys(&self) -> Vec<(&'static str, &'static str)> {
        if self.confirm.is_some() {
            return vec![("Y", "Yes"), ("any other key", "No")];
        }
        let mut k = vec![("Q", "Quit"), ("H", "Help")];
        match self.screen {
            Screen::Main | Screen::Info => {
                if let Some(s) = self.current() {
                    k.push(("I", "Info"));
                    k.push(("L", "Log"));
                    if !s.enabled {
                        k.push(("E", "Enable"));
                    } else {
                        k.push(("D", "Disable"));
                    }
                    if s.failed || s.state == State::Throttled {
                        k.push(("C", "Clear"));
                    }
                    k.push(("R", "Restart"));
                } else {
                    k.push(("L", "Log"));
                }
            }
            Screen::Log => {
                k.push(("↑↓", "Scroll"));
                k.push(("End", "Follow"));
                k.push(("/", "Search"));
            }
            Screen::Help => {}
            Screen::Login => return vec![("Tab", "Next"), ("Esc", "Quit")],
        }
        k
    }

    /// Draws the four bands: title, status, content, keys.
    pub fn draw(&self, f: &mut Frame) {
        let [title, status, body, keys] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let bar = Style::default().fg(Color::Black).bg(Color::Gray);
        let title_text = match self.screen {
            Screen::Main | Screen::Login => self.url.clone(),
            Screen::Info => format!("Details for {}", self.selected.clone().unwrap_or_default()),
            Screen::Log => match &self.log_for {
                Some(n) => format!("Log for {n}"),
                None => "Consolidated Log".into(),
            },
            Screen::Help => "Help".into(),
        };
        let right = format!("{APP} {}", env!("CARGO_PKG_VERSION"));
        let pad = (title.width as usize).saturating_sub(title_text.len() + right.len());
        let left_pad = pad / 2;
        f.render_widget(
            Paragraph::new(format!(
                "{}{}{}{}",
                " ".repeat(left_pad),
                title_text,
                " ".repeat(pad - left_pad),
                right
            ))
            .style(bar),
            title,
        );
        let (text, style) = self.status_bar();
        f.render_widget(Paragraph::new(text).style(style), status);
        match self.screen {
            Screen::Main => self.draw_main(f, body),
            Screen::Info => self.draw_info(f, body),
            Screen::Log => self.draw_log(f, body),
            Screen::Help => f.render_widget(Paragraph::new(HELP), body),
            Screen::Login => self.draw_login(f, body),
        }
        let mut spans = Vec::new();
        for (k, v) in self.keys() {
            spans.push(Span::raw("["));
            spans.push(Span::styled(
                k,
                Style::default()
                    .fg(Color::Blue)
                    .add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!("] {v} ")));
        }
        f.render_widget(Paragraph::new(Line::from(spans)).style(bar), keys);
    }

    fn status_bar(&self) -> (String, Style) {
        let good = Style::default()
            .fg(Color::White)
            .bg(Color::Green)
            .add_modifier(Modifier::BOLD);
        let warn = Style::default().fg(Color::Black).bg(Color::Yellow);
        let bad = Style::default()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD);
        let normal = Style::default().fg(Color::Black).bg(Color::Gray);
        if self.screen == Screen::Login {
            return ("Authentication Required".into(), bad);
        }
        if let Some((what, name)) = &self.confirm {
            let mut verb = what.to_string();
            verb[..1].make_ascii_uppercase();
            return (format!("{verb} {name}? [y/N]"), warn);
        }
        if let Some(e) = &self.error {
            return (format!("Cannot load items: {e}"), bad);
        }
        if let Some((m, ok)) = &self.message {
            return (m.clone(), if *ok { good } else { bad });
        }
        let count =
            |f: &dyn Fn(&ServiceInfo) -> bool| self.services.iter().filter(|s| f(s)).count();
        let faulted = count(&|s| matches!(s.state, State::Failed | State::Throttled));
        let running = count(&|s| matches!(s.state, State::Running | State::Exited));
        let waiting =
            count(&|s| matches!(s.state, State::Waiting | State::Starting | State::Stopping));
        let disabled = count(&|s| s.state == State::Disabled);
        let text = format!(
            "{:>6} Services {:>6} Faulted {:>6} Running {:>6} Standby {:>6} Disabled",
            self.services.len(),
            faulted,
            running,
            waiting,
            disabled
        );
        let style = if faulted > 0 {
            bad
        } else if waiting > 0 {
            warn
        } else if running > 0 {
            good
        } else {
            normal
        };
        (text, style)
    }

    fn draw_main(&self, f: &mut Frame, area: Rect) {
        let lines: Vec<Line> = self
            .services
            .iter()
            .map(|s| {
                let mut text = format!(
                    "{:<20}{:<10}{:>10}   {}",
                    s.name,
                    s.state.as_str(),
                    elapsed(s.tstamp),
                    s.status
                );
                if let Some(p) = s.pid {
                    text.push_str(&format!(" [pid {p}]"));
                }
                let mut style = Style::default().fg(state_color(s.state)).bg(Color::Black);
                if self.selected.as_ref() == Some(&s.name) {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                Line::styled(text, style)
            })
            .collect();
        f.render_widget(Paragraph::new(lines), area);
    }

    fn draw_info(&self, f: &mut Frame, area: Rect) {
        let Some(s) = self.current() else {
            f.render_widget(Paragraph::new("Loading..."), area);
            return;
        };
        let rows = [
            ("Name", s.name.clone()),
            ("Description", s.description.clone()),
            ("Status", s.state.as_str().to_string()),
            ("Since", s.tstamp.0.to_rfc3339()),
            ("Detail", s.status.clone()),
            (
                "PID",
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            ),
            ("Restarts", s.restarts.to_string()),
            (
                "Throttled",
                s.throttled_until
                    .map(|t| format!("until {}", t.0.to_rfc3339()))
                    .unwrap_or_else(|| "no".into()),
            ),
            ("Provides", s.provides.join(", ")),
            ("Depends", s.depends.join(", ")),
            ("Conflicts", s.conflicts.join(", ")),
        ];
        let lines: Vec<Line> = rows
            .into_iter()
            .map(|(k, v)| Line::from(format!("{k:>13}: {v}")))
            .collect();
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
    }

    fn draw_log(&self, f: &mut Frame, area: Rect) {
        let filtered: Vec<&LogRecord> = self
            .log
            .iter()
            .filter(|r| {
                self.search
                    .as_ref()
                    .is_none_or(|s| s.is_empty() || r.text.contains(s.as_str()))
            })
            .collect();
        // Long lines wrap: every record is as many screen rows as it needs.
        let rows: Vec<String> = filtered
            .iter()
            .flat_map(|r| wrap(&log_line(r), area.width as usize))
            .collect();
        let height = area.height as usize;
        self.log_max_back.set(rows.len().saturating_sub(height));
        let end = rows.len().saturating_sub(self.log_back);
        let start = end.saturating_sub(height);
        let lines: Vec<Line> = rows[start..end].iter().map(Line::raw).collect();
        f.render_widget(Paragraph::new(lines), area);
    }

    fn draw_login(&self, f: &mut Frame, area: Rect) {
        let show = |s: &str, active: bool| {
            let tail: String = s
                .chars()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let more = if s.chars().count() > 15 { "<" } else { " " };
            format!("{more}{tail}{}", if active { "_" } else { "" })
        };
        let stars = "*".repeat(self.pass.chars().count());
        let lines = vec![
            Line::from(""),
            Line::from(format!("  Username: {}", show(&self.user, !self.on_pass))),
            Line::from(format!("  Password: {}", show(&stars, self.on_pass))),
        ];
        f.render_widget(Paragraph::new(lines), area);
    }
}

/// The help screen (also in the manual page).
pub const HELP: &str = "\
  Esc        back to the main screen / clear the selection
  Ctrl-C     quit            Q  quit (or back)
  Up/Down PgUp/PgDn Home/End   move the selection (scroll in the log)
  Enter, I   details of the selected service
  L          log of the selected service (consolidated log without one);
             long lines wrap (continued rows are indented)
  E          enable the selected service
  D          disable the selected service (asks: y confirms, any other key cancels)
  R          restart the selected service (asks: y confirms, any other key cancels)
  C          clear a fault or the throttled state
  /          search in the log; End follows the tail again
  H, F1      this help
";

/// Cuts `line` into screen rows of at most `width` characters; the rows after the first
/// are indented by two spaces. Control characters (a tab) show as a space.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    const INDENT: &str = "  ";
    let chars: Vec<char> = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if width <= INDENT.len() || chars.len() <= width {
        return vec![chars.into_iter().collect()];
    }
    let mut rows = vec![chars[..width].iter().collect::<String>()];
    for chunk in chars[width..].chunks(width - INDENT.len()) {
        rows.push(format!("{INDENT}{}", chunk.iter().collect::<String>()));
    }
    rows
}

/// Keeps `tx` fed with the full service list: one GET, then long polls on the global
/// serial. Retries after 2 s on errors.
pub async fn watch_services(client: Client, tx: mpsc::UnboundedSender<Update>) {
    let mut etag: Option<Hex> = None;
    loop {
        let res = match etag {
            None => client.all().await.map(Some),
            Some(e) => client.watch_all(e, WATCH_SECS).await,
        };
        match res {
            Ok(Some((list, e))) => {
                etag = Some(e);
                if tx.send(Update::Services(list)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                etag = None;
                if tx.send(Update::Error(e)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Follows a log (only new lines after the first fetch).
pub async fn watch_log(client: Client, name: Option<String>, tx: mpsc::UnboundedSender<Update>) {
    let mut last: Option<Hex> = None;
    loop {
        let res = match last {
            None => client.log(name.as_deref(), None).await.map(Some),
            Some(l) => client.watch_log(name.as_deref(), l, WATCH_SECS).await,
        };
        match res {
            Ok(Some((records, id))) => {
                last = Some(id);
                if tx.send(Update::Log(name.clone(), records)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if tx.send(Update::Error(e)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Carries out a command that needs the network; returns the new refresher when the
/// credentials changed.
pub fn dispatch(
    cmd: Command,
    client: &mut Client,
    tx: &mpsc::UnboundedSender<Update>,
    log_task: &mut Option<JoinHandle<()>>,
    refresher: &mut JoinHandle<()>,
) {
    match cmd {
        Command::Action(what, name) => {
            let c = client.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let res = match what {
                    "enable" => c.enable(&name).await,
                    "disable" => c.disable(&name).await,
                    "restart" => c.restart(&name).await,
                    _ => c.clear(&name).await,
                };
                let _ = tx.send(Update::ActionDone(format!("{what} {name}"), res));
            });
        }
        Command::FollowLog(name) => {
            if let Some(t) = log_task.take() {
                t.abort();
            }
            *log_task = Some(tokio::spawn(watch_log(client.clone(), name, tx.clone())));
        }
        Command::StopLog => {
            if let Some(t) = log_task.take() {
                t.abort();
            }
        }
        Command::Login(user, pass) => {
            client.set_auth(&user, &pass);
            refresher.abort();
            *refresher = tokio::spawn(watch_services(client.clone(), tx.clone()));
        }
        Command::Quit => {}
    }
}

/// Runs the TUI on the terminal until the user quits.
pub async fn run(mut client: Client) -> Result<(), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut refresher = tokio::spawn(watch_services(client.clone(), tx.clone()));
    let mut log_task: Option<JoinHandle<()>> = None;
    let (ktx, mut krx) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => match event::read() {
                Ok(ev) => {
                    if ktx.send(ev).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {
                if ktx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let mut terminal = ratatui::try_init().map_err(|e| e.to_string())?;
    let mut app = App::new(client.url());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        if let Err(e) = terminal.draw(|f| app.draw(f)) {
            break Err(e.to_string());
        }
        tokio::select! {
            Some(u) = rx.recv() => app.apply(u),
            Some(ev) = krx.recv() => {
                if let Event::Key(k) = ev {
                    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('l') {
                        let _ = terminal.clear();
                    } else if let Some(cmd) = app.on_key(k) {
                        dispatch(cmd, &mut client, &tx, &mut log_task, &mut refresher);
                    }
                }
            }
            _ = tick.tick() => {}
        }
        if app.quit {
            break Ok(());
        }
    };
    ratatui::restore();
    refresher.abort();
    if let Some(t) = log_task {
        t.abort();
    }
    result
}
