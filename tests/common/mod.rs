pub mod device_checks;
