module authsvc.example/clients/go

// The module path is a placeholder (the .example domain is reserved): until authsvc is published
// at a real path, use it from a checkout with
//   require authsvc.example/clients/go v0.0.0
//   replace authsvc.example/clients/go => /path/to/authsvc/clients/go
// The versions below are the oldest this code is built and tested with (Debian 12's packages);
// `go mod tidy` records the checksums.

go 1.19

require (
	google.golang.org/genproto v0.0.0-20200413115906-b5235f65be36
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
