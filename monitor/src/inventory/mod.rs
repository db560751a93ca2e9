//! Startup-hook inventory: interpreters, site dirs, hooks and their classification.
