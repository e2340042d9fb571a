package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pkg/sftp"
)

// copyTo uploads c.source to c.remotePath over SFTP, following pulumi-command 1.2.1's rules:
//
//	source     | remotePath is a directory | does not exist         | is a file
//	file, text | remotePath/<name>          | remotePath             | overwritten
//	dir        | remotePath/<dir name>/...  | remotePath/<dir name>/...  | error
//	dir/       | remotePath/...             | remotePath/...             | error
//
// Missing parent directories of remotePath are created. A copied file keeps its permission bits
// (a StringAsset becomes 0644).
func copyTo(ctx context.Context, c *copyToRemote) error {
	client, err := c.connection.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	remote, err := sftp.NewClient(client)
	if err != nil {
		return fmt.Errorf("%s: cannot start SFTP (the server needs an sftp subsystem): %w", c.connection.address(), err)
	}
	defer remote.Close()

	dest := c.remotePath
	destInfo, err := remoteStat(remote, dest)
	if err != nil {
		return err
	}
	if destInfo == nil {
		if err := remote.MkdirAll(path.Dir(dest)); err != nil {
			return fmt.Errorf("cannot create %s on the remote host: %w", path.Dir(dest), err)
		}
	}
	if c.source.isText {
		if destInfo != nil && destInfo.IsDir() {
			return fmt.Errorf("remotePath %s is a directory; a StringAsset needs a file path", dest)
		}
		return writeRemote(remote, dest, strings.NewReader(c.source.text), 0o644)
	}
	info, err := os.Stat(c.source.path)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if !info.IsDir() {
		if destInfo != nil && destInfo.IsDir() {
			dest = path.Join(dest, filepath.Base(c.source.path))
		}
		return copyFile(remote, c.source.path, dest, info.Mode().Perm())
	}
	if destInfo != nil && !destInfo.IsDir() {
		return fmt.Errorf("remotePath %s exists and is not a directory; the source %s is one", dest, c.source.path)
	}
	if !strings.HasSuffix(c.source.path, "/") {
		dest = path.Join(dest, filepath.Base(c.source.path))
	}
	return copyDir(remote, c.source.path, dest)
}

// remoteStat is nil, nil when the path does not exist.
func remoteStat(remote *sftp.Client, p string) (fs.FileInfo, error) {
	info, err := remote.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot stat %s on the remote host: %w", p, err)
	}
	return info, nil
}

func copyFile(remote *sftp.Client, src, dest string, mode fs.FileMode) error {
	local, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer local.Close()
	return writeRemote(remote, dest, local, mode)
}

func writeRemote(remote *sftp.Client, dest string, content io.Reader, mode fs.FileMode) error {
	file, err := remote.Create(dest)
	if err != nil {
		return fmt.Errorf("cannot create %s on the remote host: %w", dest, err)
	}
	if _, err := file.ReadFrom(content); err != nil {
		file.Close()
		return fmt.Errorf("copying to %s failed: %w", dest, err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("copying to %s failed: %w", dest, err)
	}
	if err := remote.Chmod(dest, mode); err != nil {
		return fmt.Errorf("cannot set the mode of %s: %w", dest, err)
	}
	return nil
}

func copyDir(remote *sftp.Client, src, dest string) error {
	return fs.WalkDir(os.DirFS(src), ".", func(rel string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := path.Join(dest, filepath.ToSlash(rel))
		info, err := entry.Info()
		if err != nil {
			return err
		}
		if !entry.IsDir() {
			return copyFile(remote, filepath.Join(src, rel), target, info.Mode().Perm())
		}
		existing, err := remoteStat(remote, target)
		if err != nil {
			return err
		}
		if existing != nil && !existing.IsDir() {
			return fmt.Errorf("remote path %s exists and is not a directory", target)
		}
		if existing == nil {
			if err := remote.MkdirAll(target); err != nil {
				return fmt.Errorf("cannot create %s on the remote host: %w", target, err)
			}
		}
		return remote.Chmod(target, info.Mode().Perm())
	})
}
