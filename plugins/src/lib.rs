//! cc-plugin: the SDK for third-party passes (C ABI); filled in by the plugin work.
