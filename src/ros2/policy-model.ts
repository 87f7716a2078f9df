// The SROS2 access policy as data (sros2's policy.xsd, version 0.2.0). Read from an SROS2 policy
// file (src/ros2/policy-xml/) or derived from the fleet policy's `ros2` section (src/access/), and
// rendered to DDS permissions.xml by src/ros2/permissions.ts. Order is kept as written: the
// rendering depends on it, as sros2's permissions.xsl does.

export type Qualifier = "ALLOW" | "DENY";

/** <topics publish=".." subscribe="..">: DDS topics "rt<fqn>". */
export interface TopicsRule {
  kind: "topics";
  publish?: Qualifier;
  subscribe?: Qualifier;
  /** Names as written: absolute ("/clock"), relative ("chatter") or private ("~/x"); DDS wildcards * and ? allowed. */
  names: string[];
}

/** <services request=".." reply="..">: DDS topics "rq<fqn>Request" / "rr<fqn>Reply". */
export interface ServicesRule {
  kind: "services";
  request?: Qualifier;
  reply?: Qualifier;
  names: string[];
}

/** <actions call=".." execute="..">: the action's goal/result/cancel services and feedback/status topics. */
export interface ActionsRule {
  kind: "actions";
  call?: Qualifier;
  execute?: Qualifier;
  names: string[];
}

export type ProfileRule = TopicsRule | ServicesRule | ActionsRule;

/** <profile ns=".." node="..">: the node whose relative and private names the rules use. */
export interface Profile {
  ns: string;
  node: string;
  rules: ProfileRule[];
}

/** <enclave path="..">: each <profiles> element becomes one DDS <grant> named after the path. */
export interface Enclave {
  path: string;
  profileSets: Profile[][];
}

export interface Sros2Policy {
  enclaves: Enclave[];
}

/** The parameters of sros2's permissions.xsl, plus the DDS domain id it writes as 0. */
export interface PermissionsParameters {
  /** Written as given into <not_before>; sros2 uses the certificate's notBefore as "YYYY-MM-DDTHH:MM:SS". */
  notBefore: string;
  notAfter: string;
  allowRosDiscoveryTopic: boolean;
  domainId: number;
}
