// sros2's default DDS governance (sros2/policy/defaults/dds/governance.xml, ros2/sros2 commit
// e349fcf2ab68b97664295b71e41f1b86aa1034ab, tag 0.13.0), copied unchanged: authenticate every
// participant, encrypt discovery, liveliness and data, sign RTPS messages, access control on.
//
// Copyright 2016-2019 Open Source Robotics Foundation, Inc.
// Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
// in compliance with the License. You may obtain a copy of the License at
//     http://www.apache.org/licenses/LICENSE-2.0
// Unless required by applicable law or agreed to in writing, software distributed under the License
// is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express
// or implied. See the License for the specific language governing permissions and limitations under
// the License.

export const DEFAULT_GOVERNANCE_XML = `
<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_governance.xsd">
    <domain_access_rules>
        <domain_rule>
            <domains>
              <id>0</id>
            </domains>
            <allow_unauthenticated_participants>false</allow_unauthenticated_participants>
            <enable_join_access_control>true</enable_join_access_control>
            <discovery_protection_kind>ENCRYPT</discovery_protection_kind>
            <liveliness_protection_kind>ENCRYPT</liveliness_protection_kind>
            <rtps_protection_kind>SIGN</rtps_protection_kind>
            <topic_access_rules>
                <topic_rule>
                    <topic_expression>*</topic_expression>
                    <enable_discovery_protection>true</enable_discovery_protection>
                    <enable_liveliness_protection>true</enable_liveliness_protection>
                    <enable_read_access_control>true</enable_read_access_control>
                    <enable_write_access_control>true</enable_write_access_control>
                    <metadata_protection_kind>ENCRYPT</metadata_protection_kind>
                    <data_protection_kind>ENCRYPT</data_protection_kind>
                </topic_rule>
            </topic_access_rules>
        </domain_rule>
    </domain_access_rules>
</dds>
`.slice(1);

/**
 * The default governance for one DDS domain: sros2 sets every <domains><id> to ROS_DOMAIN_ID, here
 * the keystore's domain id.
 */
export function defaultGovernance(domainId: number): string {
  if (!Number.isInteger(domainId) || domainId < 0 || domainId > 232) throw new RangeError(`domain id ${domainId} out of 0-232`);
  return DEFAULT_GOVERNANCE_XML.replace(/<id>0<\/id>/g, `<id>${domainId}</id>`);
}
