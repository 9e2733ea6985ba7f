//! The `[scheduler]` section of the config file.

use squall_scheduler::{ConfigError, Delivery, SchedulerConfig};
use std::time::Duration;

const SNIPPET: &str = r#"
executor_timeout = 1500
max_retries = 1
colocate_chains = true
delivery = "at-least-once"
executor_capacity = 16
busy_permille = 900
queue_capacity = 10000
dag_cache_ttl = 10000
deadline_grace = 500
trigger_refresh = 2000
trigger_timeout = 60000

[client]
attempt_timeout = 500
op_timeout = 5000
put_ack = "FirstReplica"
delete_ack = "All"
"#;

#[test]
fn the_documented_section_is_the_default() {
    let parsed: SchedulerConfig = toml::from_str(SNIPPET).unwrap();
    assert_eq!(parsed, SchedulerConfig::default());
    assert_eq!(parsed.validate(), Ok(()));
    let empty: SchedulerConfig = toml::from_str("").unwrap();
    assert_eq!(empty, SchedulerConfig::default());
}

#[test]
fn settings_round_trip_and_unknown_ones_are_refused() {
    let config = SchedulerConfig {
        delivery: Delivery::AtMostOnce,
        executor_timeout: Duration::from_millis(900),
        ..SchedulerConfig::default()
    };
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("delivery = \"at-most-once\""), "{text}");
    assert_eq!(toml::from_str::<SchedulerConfig>(&text).unwrap(), config);
    assert!(toml::from_str::<SchedulerConfig>("max_retires = 2").is_err());
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let zero = SchedulerConfig {
        executor_capacity: 0,
        ..SchedulerConfig::default()
    };
    assert_eq!(zero.validate(), Err(ConfigError::ZeroCapacity));
    let busy = SchedulerConfig {
        busy_permille: 1001,
        ..SchedulerConfig::default()
    };
    assert_eq!(busy.validate(), Err(ConfigError::BusyPermille(1001)));
}
