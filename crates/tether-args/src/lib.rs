//! Command-line pieces shared by the `tether` binary and the fault lab
//! (`tether-lab`, whose `lab` and hidden `lab-node` subcommands the binary
//! embeds): the heartbeat profile argument and the duration parser. Both
//! sides take the same `--profile` and duration flags, so they are defined
//! once, here, rather than in either front end.

use std::time::Duration;

use clap::ValueEnum;
use tether_proto::Profile;

/// A heartbeat profile as a command-line value (`--profile realtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Dead link detected within ~40 s.
    Default,
    /// Dead link detected within ~9 s (calls, games).
    Realtime,
    /// Learns the longest ping interval the network's NATs allow.
    Adaptive,
}

impl ProfileArg {
    /// The name written on the command line (and in lab reports).
    pub fn name(self) -> &'static str {
        match self {
            ProfileArg::Default => "default",
            ProfileArg::Realtime => "realtime",
            ProfileArg::Adaptive => "adaptive",
        }
    }
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Default => Profile::Default,
            ProfileArg::Realtime => Profile::Realtime,
            ProfileArg::Adaptive => Profile::Adaptive,
        }
    }
}

/// Parses `50s`, `1500ms`, `2m`, `1m 30s`, saying how to fix a bad one
/// (a clap `value_parser`).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}; write a duration with a unit, e.g. 50s or 1500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_fix_them() {
        assert_eq!(duration("50s"), Ok(Duration::from_secs(50)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(duration("50").expect_err("no unit").contains("with a unit"));
        assert!(duration("5 parsecs").is_err());
    }

    #[test]
    fn profile_names_are_the_command_line_values() {
        for p in ProfileArg::value_variants() {
            let v = p.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(v.as_deref(), Some(p.name()));
        }
    }
}
