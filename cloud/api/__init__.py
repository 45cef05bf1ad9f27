"""HTTP layer: dependencies, error mapping and routers. Routes parse, authorise and map errors."""
