"""Attribution methods: one small module each on a shared base; `registry.METHODS` lists them by API name."""
