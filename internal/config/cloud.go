package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Cloud is one of Microsoft's national clouds: where Graph and Entra are,
// and the scope a token for that Graph must name. Tokens do not cross
// clouds.
type Cloud struct {
	Name      string // the SITEFOLLOW_CLOUD value
	GraphURL  string // without a trailing slash
	Authority string // with a trailing slash, as azidentity takes it
	Scope     string
}

// clouds lists the known clouds, in help order (from Microsoft's national
// cloud deployments page; see graph-facts.md).
func clouds() []Cloud {
	return []Cloud{
		{"global", "https://graph.microsoft.com", "https://login.microsoftonline.com/", "https://graph.microsoft.com/.default"},
		{"usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us/", "https://graph.microsoft.us/.default"},
		{"usgovdod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us/", "https://dod-graph.microsoft.us/.default"},
		{"china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn/", "https://microsoftgraph.chinacloudapi.cn/.default"},
	}
}

// CloudNamed returns the cloud called name, and false for an unknown name.
func CloudNamed(name string) (Cloud, bool) {
	for _, c := range clouds() {
		if c.Name == name {
			return c, true
		}
	}
	return Cloud{}, false
}

// cloudNames is the allowed values of SITEFOLLOW_CLOUD.
func cloudNames() []string {
	var names []string
	for _, c := range clouds() {
		names = append(names, c.Name)
	}
	return names
}

// cloudOf is c's cloud; global when the name is unknown (already refused
// by the setting's own check).
func (c *Config) cloudOf() Cloud {
	if cl, ok := CloudNamed(c.Cloud); ok {
		return cl
	}
	return clouds()[0]
}

// GraphScope is the token scope for the chosen cloud's Graph. It stays the
// cloud's when SITEFOLLOW_GRAPH_URL points at a private endpoint or a
// simulator, which change hosts only.
func (c Config) GraphScope() string { return c.cloudOf().Scope }

// hostOf is the lower-case host name of a URL, "" when it does not parse.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// otherCloud returns the known cloud other than own whose URL (picked by
// field) has the host of raw, if any: a Graph URL of another cloud would be
// sent tokens it refuses, or worse, tokens for the wrong cloud.
func otherCloud(own Cloud, raw string, field func(Cloud) string) (Cloud, bool) {
	host := hostOf(raw)
	if host == "" || host == hostOf(field(own)) {
		return Cloud{}, false
	}
	for _, cl := range clouds() {
		if hostOf(field(cl)) == host {
			return cl, true
		}
	}
	return Cloud{}, false
}

// cloudRelations refuse hosts that belong to another known cloud than the
// chosen one, before any token is requested.
func cloudRelations() []relation {
	return []relation{
		{"graph-url", func(c *Config, name func(string) string) error {
			own := c.cloudOf()
			if other, ok := otherCloud(own, c.GraphURL, func(cl Cloud) string { return cl.GraphURL }); ok {
				return fmt.Errorf("is the Graph host of cloud %s, but %s is %s, whose token scope is %s: set %s %s or point the URL at %s",
					other.Name, name("cloud"), own.Name, own.Scope, name("cloud"), other.Name, own.GraphURL)
			}
			return nil
		}},
		{"authority-host", func(c *Config, name func(string) string) error {
			own := c.cloudOf()
			if other, ok := otherCloud(own, c.AuthorityHost, func(cl Cloud) string { return cl.Authority }); ok {
				return fmt.Errorf("is the Entra authority of cloud %s, but %s is %s, whose authority is %s",
					other.Name, name("cloud"), own.Name, own.Authority)
			}
			return nil
		}},
	}
}
