-- ALS registry patients with each event in the fiscal year (NIV, gastrostomy,
-- tracheostomy, death); a patient with two events counts under each.
-- イベント別患者数（NIV・胃瘻・気管切開・死亡）
SELECT event_type, COUNT(DISTINCT pid) AS n
FROM als_event
WHERE fiscal_year = {fy}
GROUP BY event_type
