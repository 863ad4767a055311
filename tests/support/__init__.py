"""The tests' shared support layer: real parts, network namespaces, the fake Internet, the live
server, the `world` builders, policies and ClientHellos. Tests import from here, not from each
other."""
