//! The load generator behind `wardlink-bench`: lean MQTT devices, WebSocket dashboards and MQTT
//! subscribers, the systems under test (Wardlink, Mosquitto, Node-RED) as real processes, and
//! the report (table, JSON, latency plot).

pub mod mqtt;
pub mod report;
pub mod run;
pub mod stats;
pub mod systems;
pub mod track;
