// Package destinationpb holds the protobuf service between the trackd daemon
// and its destination plugins, and the code generated from destination.proto.
package destinationpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative destination.proto
