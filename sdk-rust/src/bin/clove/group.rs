//! `clove group create|ls|stop`: supervisor groups (GROUP_CREATE, GROUP_LIST, GROUP_STOP).

use std::io::Write;

use clap::Subcommand;
use clove_sdk::msg::{GroupCreateRequest, GroupInfo, GroupStrategy};
use clove_sdk::Client;

use crate::table::Table;
use crate::{as_json, Failure, ResultExt};

/// `clove group`'s subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum GroupCmd {
    /// Create a group; agents join it with `clove run --group NAME`
    #[command(
        after_help = "Examples:\n  clove group create pool --strategy one_for_all --intensity 3 --period 10\n  clove group create workers --parent pool\n  clove run worker.py --group workers --restart permanent"
    )]
    Create {
        /// The group's name
        name: String,
        /// Which children restart when one fails: one_for_one, one_for_all, rest_for_one
        #[arg(long, default_value = "one_for_one", value_parser = parse_strategy)]
        strategy: GroupStrategy,
        /// Restarts allowed within --period; one more and the group gives up and escalates
        #[arg(long, default_value_t = clove_sdk::msg::DEFAULT_INTENSITY)]
        intensity: u32,
        /// The window of --intensity, in seconds
        #[arg(long, default_value_t = clove_sdk::msg::DEFAULT_PERIOD)]
        period: f64,
        /// Nest under this group (it escalates to it)
        #[arg(long, value_name = "GROUP")]
        parent: Option<String>,
        /// SIGTERM-to-SIGKILL time of its children in ms [default: the kernel's kill grace]
        #[arg(long, value_name = "MS")]
        shutdown_ms: Option<u64>,
    },
    /// List groups with their children in start order
    #[command(visible_alias = "list")]
    Ls {
        /// Only this group
        name: Option<String>,
    },
    /// Stop a group's whole tree for good (children in reverse start order) and remove it
    Stop {
        /// The group's name
        name: String,
    },
}

fn parse_strategy(s: &str) -> Result<GroupStrategy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("{s}: expected one_for_one, one_for_all or rest_for_one"))
}

/// Runs one `clove group` subcommand.
pub fn run(
    client: &mut Client,
    out: &mut impl Write,
    json: bool,
    cmd: &GroupCmd,
) -> Result<(), Failure> {
    match cmd {
        GroupCmd::Create {
            name,
            strategy,
            intensity,
            period,
            parent,
            shutdown_ms,
        } => {
            let req = GroupCreateRequest {
                strategy: *strategy,
                intensity: *intensity,
                period: *period,
                parent: parent.clone(),
                shutdown_ms: *shutdown_ms,
                ..GroupCreateRequest::new(name.clone())
            };
            let g = client
                .group_create(&req)
                .ctx(&format!("create group {name}"))?;
            if json {
                writeln!(out, "{}", as_json(&g))?;
            } else {
                writeln!(
                    out,
                    "group {} created: {}, at most {} restart(s) in {}s{}",
                    g.name,
                    g.strategy.as_str(),
                    g.intensity,
                    g.period,
                    g.parent
                        .as_deref()
                        .map(|p| format!(", under {p}"))
                        .unwrap_or_default()
                )?;
            }
        }
        GroupCmd::Ls { name } => {
            let groups = client.group_list(name.as_deref()).ctx("list groups")?;
            if json {
                writeln!(out, "{}", as_json(&groups))?;
            } else {
                out.write_all(groups_table(&groups).as_bytes())?;
            }
        }
        GroupCmd::Stop { name } => {
            let r = client.group_stop(name).ctx(&format!("stop group {name}"))?;
            if json {
                writeln!(out, "{}", as_json(&r))?;
            } else {
                let ids: Vec<String> = r.stopped.iter().map(u32::to_string).collect();
                writeln!(
                    out,
                    "group {} stopped ({} agent(s){})",
                    r.name,
                    ids.len(),
                    if ids.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", ids.join(", "))
                    }
                )?;
            }
        }
    }
    Ok(())
}

/// GROUP STRATEGY INTENSITY PARENT STATE RESTARTS CHILDREN, children as `name(state)`.
fn groups_table(groups: &[GroupInfo]) -> String {
    let mut t = Table::new(&[
        "GROUP",
        "STRATEGY",
        "INTENSITY",
        "PARENT",
        "STATE",
        "RESTARTS",
        "CHILDREN",
    ]);
    for g in groups {
        let children: Vec<String> = g
            .children
            .iter()
            .map(|c| match c.id {
                Some(id) => format!("{}#{id}({})", c.name, c.state),
                None => format!("[{}]({})", c.name, c.state),
            })
            .collect();
        t.push(vec![
            g.name.clone(),
            g.strategy.as_str().into(),
            format!("{}/{}s", g.intensity, g.period),
            g.parent.clone().unwrap_or_else(|| "-".into()),
            g.state.clone(),
            g.restarts.to_string(),
            children.join(" "),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clove_sdk::msg::GroupChild;

    #[test]
    fn strategies_parse_and_the_table_shows_children_in_order() {
        assert_eq!(parse_strategy("one_for_all"), Ok(GroupStrategy::OneForAll));
        assert_eq!(
            parse_strategy("rest-for-one"),
            Ok(GroupStrategy::RestForOne)
        );
        assert!(parse_strategy("all_for_one").is_err());
        let g = GroupInfo {
            name: "pool".into(),
            strategy: GroupStrategy::OneForAll,
            intensity: 3,
            period: 10.0,
            parent: None,
            shutdown_ms: 3000,
            state: "running".into(),
            restarts: 2,
            children: vec![
                GroupChild {
                    kind: "agent".into(),
                    id: Some(7),
                    name: "a".into(),
                    state: "running".into(),
                },
                GroupChild {
                    kind: "group".into(),
                    id: None,
                    name: "sub".into(),
                    state: "waiting".into(),
                },
            ],
        };
        let text = groups_table(&[g]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("pool   one_for_all  3/10s"), "{text}");
        assert!(line.ends_with("a#7(running) [sub](waiting)"), "{text}");
    }
}
