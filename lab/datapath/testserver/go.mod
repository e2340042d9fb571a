module k3s-cilium/lab/testserver

go 1.22
